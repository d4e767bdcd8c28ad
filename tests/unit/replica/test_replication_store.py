"""The DR site's store on real files: sequence rules, resume, atomic commit and exact recovery points."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from overland.v1 import replica_pb2
from services.replica.dr.journal import Journal
from services.replica.dr.layout import TRASH_PREFIX
from services.replica.dr.store import VmStore
from services.replica.errors import DuplicateDelta, MalformedDelta, SequenceError, UnknownVm
from services.replica.states import HOUR_NANOS
from services.replica.vhd import BlockDevice, open_disk

SIZE = 256 * 1024
T0 = 1_800_000_000 * 10**9


def header(
    seq: int, full: bool = False, resume: int = 0, cut: int = 0, points: int = 0
) -> replica_pb2.DeltaHeader:
    return replica_pb2.DeltaHeader(
        vm_name="vm1",
        sequence=seq,
        disk_sizes={"d0": SIZE},
        full=full,
        resume_from=resume,
        cut_time_unix_nanos=cut or T0 + seq,
        additional_recovery_points=points,
    )


def send(store: VmStore, h: replica_pb2.DeltaHeader, writes: list[tuple[int, bytes]]) -> replica_pb2.DeltaAck:
    staging = store.begin(h)
    for index, (offset, data) in enumerate(writes):
        staging.add(index, "d0", offset, data, not any(data))
    return staging.finish(len(writes))


def read_disk(path: Path) -> bytes:
    device = open_disk(path)
    try:
        return device.read(0, SIZE)
    finally:
        device.close()


def test_sequence_rules(tmp_path: Path) -> None:
    store = VmStore(tmp_path, "vm1")
    with pytest.raises(UnknownVm, match="initial replication"):
        store.begin(header(1))
    send(store, header(1, full=True), [(0, b"a" * 4096)])
    with pytest.raises(DuplicateDelta, match="already committed"):
        store.begin(header(1))
    with pytest.raises(SequenceError, match="next expected sequence is 2"):
        store.begin(header(3))
    assert store.receiver_state().committed_sequence == 1
    assert read_disk(store.layout.disks / "d0.vhd")[:4097] == b"a" * 4096 + b"\0"


def test_interrupted_delta_resumes_and_torn_tail_is_cut(tmp_path: Path) -> None:
    store = VmStore(tmp_path, "vm1")
    send(store, header(1, full=True), [])
    writes = [(i * 8192, bytes([i + 1]) * 8192) for i in range(6)]
    staging = store.begin(header(2))
    for index in range(4):
        staging.add(index, "d0", *writes[index], False)
    staging.close()
    with (store.layout.staging / "chunks.log").open("ab") as log:
        log.write(b"OVRR-torn-record")
    reopened = VmStore(tmp_path, "vm1")
    state = reopened.receiver_state()
    assert (state.staged_sequence, state.staged_chunks) == (2, 4)
    with pytest.raises(SequenceError, match="only 4 chunks"):
        reopened.begin(header(2, resume=5))
    staging = reopened.begin(header(2, resume=3))
    for index in range(3, 6):
        staging.add(index, "d0", *writes[index], False)
    assert staging.finish(6).sequence == 2
    expected = b"".join(data for _o, data in writes) + bytes(SIZE - 6 * 8192)
    assert read_disk(reopened.layout.disks / "d0.vhd") == expected


def test_a_new_cut_restarts_the_staging(tmp_path: Path) -> None:
    store = VmStore(tmp_path, "vm1")
    send(store, header(1, full=True), [])
    staging = store.begin(header(2, cut=T0 + 100))
    staging.add(0, "d0", 0, b"x" * 4096, False)
    staging.close()
    # The primary restarted and cut again: same sequence, a different cut, so resume is refused.
    staging = store.begin(header(2, cut=T0 + 200, resume=0))
    assert staging.chunks == 0
    staging.finish(0)
    assert read_disk(store.layout.disks / "d0.vhd")[:4096] == bytes(4096)


def test_crash_before_and_after_the_commit_rename(tmp_path: Path) -> None:
    store = VmStore(tmp_path, "vm1")
    send(store, header(1, full=True), [(0, b"1" * 4096)])
    staging = store.begin(header(2))
    staging.add(0, "d0", 0, b"2" * 4096, False)
    staging.checkpoint(1)
    staging.close()
    # Crash before the rename: the replica is still at point 1.
    before = VmStore(tmp_path, "vm1")
    assert before.receiver_state().committed_sequence == 1
    assert read_disk(before.layout.disks / "d0.vhd")[:4096] == b"1" * 4096
    # Crash right after the rename (the commit point): a restart applies the journal.
    before.layout.staging.replace(before.layout.journal)
    after = VmStore(tmp_path, "vm1")
    assert after.receiver_state().committed_sequence == 2
    assert read_disk(after.layout.disks / "d0.vhd")[:4096] == b"2" * 4096
    assert not after.layout.journal.exists()


def test_a_finished_journal_is_removed_after_the_ack_or_at_the_next_start(tmp_path: Path) -> None:
    store = VmStore(tmp_path, "vm1")
    send(store, header(1, full=True), [(0, b"1" * 4096)])
    send(store, header(2), [(4096, b"2" * 4096)])
    for thread in threading.enumerate():
        if thread.name == "journal-retire":
            thread.join(timeout=30)
    assert sorted(p.name for p in store.layout.root.iterdir()) == ["disks", "state.json"]
    # A process killed before its cleanup ran leaves one behind; the next start removes it.
    leftover = store.layout.root / f"{TRASH_PREFIX}0123"
    leftover.mkdir()
    (leftover / "chunks.log").write_bytes(b"x")
    reopened = VmStore(tmp_path, "vm1")
    assert not leftover.exists()
    assert reopened.receiver_state().committed_sequence == 2
    assert read_disk(reopened.layout.disks / "d0.vhd")[:8192] == b"1" * 4096 + b"2" * 4096


def acked_but_not_retired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VmStore:
    """A store whose delta 2 was acked while the background half of its commit never ran."""
    store = VmStore(tmp_path, "vm1")
    send(store, header(1, full=True), [(0, b"1" * 4096)])
    left_open: list[BlockDevice] = []
    monkeypatch.setattr(Journal, "_retire_quietly", lambda _self, _header, written: left_open.extend(written))
    assert send(store, header(2), [(4096, b"2" * 4096)]).sequence == 2
    assert (store.layout.journal / "header.bin").exists()
    # The process that died held the replica open (and image-locked); its death closed it.
    for device in left_open:
        device.close()
    return store


def test_a_journal_acked_before_its_writeback_is_redone_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Killed right after the ack: the background half (flush the replica, delete the journal) never ran,
    # and the replica's page cache was lost with the machine.
    store = acked_but_not_retired(tmp_path, monkeypatch)
    disk = open_disk(store.layout.disks / "d0.vhd", writable=True)
    disk.write(4096, b"\0" * 4096)
    disk.close()
    reopened = VmStore(tmp_path, "vm1")
    assert not reopened.layout.journal.exists()
    assert reopened.receiver_state().committed_sequence == 2
    assert [p.sequence for p in reopened.recovery_points()] == [2]
    assert read_disk(reopened.layout.disks / "d0.vhd")[:8192] == b"1" * 4096 + b"2" * 4096


def test_a_journal_the_background_could_not_retire_is_retired_by_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = acked_but_not_retired(tmp_path, monkeypatch)
    monkeypatch.undo()
    send(store, header(3), [(8192, b"3" * 4096)])
    for thread in threading.enumerate():
        if thread.name == "journal-retire":
            thread.join(timeout=30)
    assert not store.layout.journal.exists()
    assert read_disk(store.layout.disks / "d0.vhd")[:12288] == b"1" * 4096 + b"2" * 4096 + b"3" * 4096


def test_recovery_points_are_exact_after_pruning(tmp_path: Path) -> None:
    rng = random.Random(7)
    clock = [T0]
    store = VmStore(tmp_path / "dr", "vm1", clock=lambda: clock[0])
    history: dict[int, bytes] = {}
    image = bytearray(SIZE)
    initial = [(0, bytes(rng.randrange(256) for _ in range(SIZE // 4)))]
    send(store, header(1, full=True, cut=T0, points=3), initial)
    image[: SIZE // 4] = initial[0][1]
    history[1] = bytes(image)
    for seq in range(2, 14):
        writes = []
        for _ in range(rng.randrange(1, 5)):
            offset = rng.randrange(0, SIZE - 9000) // 512 * 512
            data = bytes([rng.randrange(256)]) * rng.randrange(512, 9000, 512)
            if rng.random() < 0.2:
                data = bytes(len(data))
            writes.append((offset, data))
            image[offset : offset + len(data)] = data
        # Points every 20 minutes: retention keeps the newest of each of the last three hours.
        clock[0] = T0 + seq * HOUR_NANOS // 3
        send(store, header(seq, cut=clock[0], points=3), writes)
        history[seq] = bytes(image)
    kept = [p.sequence for p in store.recovery_points()]
    assert kept[0] == 13
    assert 1 < len(kept) <= 4
    assert len(list(store.layout.points.iterdir())) == len(kept) - 1
    for seq in kept:
        disks = store.materialize(seq, tmp_path / f"point-{seq}")
        assert read_disk(disks["d0"]) == history[seq], f"recovery point {seq} differs"


def test_disk_names_must_be_path_safe(tmp_path: Path) -> None:
    store = VmStore(tmp_path, "vm1")
    bad = header(1, full=True)
    bad.disk_sizes["../escape"] = SIZE
    with pytest.raises(MalformedDelta) as info:
        store.begin(bad)
    assert [v.field for v in info.value.violations] == ["header.disk_sizes[../escape]"]
    odd = header(1, full=True)
    odd.disk_sizes["d0"] = 1000
    with pytest.raises(MalformedDelta, match="multiple of 512"):
        store.begin(odd)
    assert not (tmp_path / "escape.vhd").exists()
