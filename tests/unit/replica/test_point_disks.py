"""Point disks (a VM at a recovery point, a differencing disk over the replica) against a model of
every point: seeded from the undo layers, kept exact while deltas commit under them, with their VM's
own writes on top; a crash between the copy and the redo; complete (the merge); the VHD's own runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.disks import SiteDisks
from services.replica.dr import journal as journal_module
from services.replica.dr.point_disks import PointDevice, sector_span
from services.replica.dr.store import VmStore
from services.replica.errors import DeltasRefused, ReplicaDiskMissing, UnknownRecoveryPoint
from services.replica.states import HOUR_NANOS
from services.replica.vhd import create_differencing, create_fixed, open_disk, open_over

SIZE = 192 * 1024
T0 = 1_800_000_000 * 10**9


def header(seq: int, full: bool = False, points: int = 3, hours: int = 3) -> replica_pb2.DeltaHeader:
    """Delta ``seq``, cut ``hours`` deltas an hour (by default three: the retention keeps a few)."""
    return replica_pb2.DeltaHeader(
        vm_name="vm1",
        sequence=seq,
        disk_sizes={"d0": SIZE},
        full=full,
        cut_time_unix_nanos=T0 + seq * HOUR_NANOS // hours,
        additional_recovery_points=points,
    )


def send(store: VmStore, h: replica_pb2.DeltaHeader, writes: list[tuple[int, bytes]]) -> None:
    staging = store.begin(h)
    for index, (offset, data) in enumerate(writes):
        staging.add(index, "d0", offset, data, not any(data))
    staging.finish(len(writes))


def wait_retired() -> None:
    for thread in threading.enumerate():
        if thread.name == "journal-retire":
            thread.join(timeout=30)


@dataclass
class Model:
    """The replica at every committed point, and each live point disk's expected content."""

    points: dict[int, bytes] = field(default_factory=dict)
    image: bytearray = field(default_factory=lambda: bytearray(SIZE))
    disks: dict[str, bytearray] = field(default_factory=dict)


writes = st.lists(
    st.tuples(st.integers(0, SIZE // 512 - 1), st.integers(1, 40), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)
vm_writes = st.lists(
    st.tuples(st.integers(0, SIZE - 1), st.integers(1, 9000), st.integers(0, 255)), min_size=1, max_size=3
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), writes),
        st.tuples(st.just("create"), st.sampled_from(["test", "failover"]), st.integers(0, 20)),
        st.tuples(st.just("vm"), st.sampled_from(["test", "failover"]), vm_writes),
        st.tuples(st.just("drop"), st.sampled_from(["test", "failover"])),
    ),
    min_size=1,
    max_size=14,
)


def check(store: VmStore, model: Model) -> None:
    for tag, expected in model.disks.items():
        device = store.point_disks[tag].devices()["d0"]
        assert device.read(0, SIZE) == bytes(expected), f"{tag} point disk differs from its model"
    replica = open_disk(store.layout.replica("d0"))
    try:
        assert replica.read(0, SIZE) == bytes(model.image)
    finally:
        replica.close()


@given(operations)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_point_disks_read_as_their_point_plus_their_writes(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Any]
) -> None:
    base = tmp_path_factory.mktemp("points")
    clock = [T0]
    owner = SiteDisks()
    store = VmStore(base, "vm1", clock=lambda: clock[0], owner=owner)
    model = Model()
    send(store, header(1, full=True), [(0, bytes(range(256)) * (SIZE // 256))])
    model.image[:] = bytes(range(256)) * (SIZE // 256)
    model.points[1] = bytes(model.image)
    seq = 1
    try:
        for op in ops:
            if op[0] == "commit":
                seq += 1
                changes = []
                for sector, count, value in op[1]:
                    offset = sector * 512
                    data = bytes([value]) * min(count * 512, SIZE - offset)
                    changes.append((offset, data))
                    model.image[offset : offset + len(data)] = data
                clock[0] = T0 + seq * HOUR_NANOS // 3
                send(store, header(seq), changes)
                model.points[seq] = bytes(model.image)
            elif op[0] == "create" and op[1] not in model.disks:
                kept = sorted(p.sequence for p in store.recovery_points())
                point = kept[op[2] % len(kept)]
                store.create_point_disks(op[1], point, {"d0": f"vm1 {op[1]}/d0"})
                model.disks[op[1]] = bytearray(model.points[point])
            elif op[0] == "vm" and op[1] in model.disks:
                device = store.point_disks[op[1]].devices()["d0"]
                for offset, length, value in op[2]:
                    data = bytes([value]) * min(length, SIZE - offset)
                    device.write(offset, data)
                    model.disks[op[1]][offset : offset + len(data)] = data
            elif op[0] == "drop" and op[1] in model.disks:
                store.drop_point_disks(op[1])
                del model.disks[op[1]]
            check(store, model)
        wait_retired()
        # A restarted site finds its point disks and they read the same.
        for point in list(store.point_disks.values()):
            for held in point.held.values():
                owner.release(held, "point")
        reopened = VmStore(base, "vm1", clock=lambda: clock[0], owner=SiteDisks())
        check(reopened, model)
        assert sorted(reopened.point_disks) == sorted(model.disks)
    finally:
        owner.close()


def replica_store(tmp_path: Path, owner: SiteDisks, points: int = 3) -> tuple[VmStore, list[bytes]]:
    """A store with points 1..3: the disk all 1s, then 2s over the first half, then 3s over a quarter."""
    store = VmStore(tmp_path, "vm1", clock=lambda: T0 + 3 * HOUR_NANOS, owner=owner)
    send(store, header(1, full=True, points=points, hours=1), [(0, b"\1" * SIZE)])
    send(store, header(2, points=points, hours=1), [(0, b"\2" * (SIZE // 2))])
    send(store, header(3, points=points, hours=1), [(0, b"\3" * (SIZE // 4))])
    third, half = SIZE // 4, SIZE // 2
    return store, [
        b"\1" * SIZE,
        b"\2" * half + b"\1" * half,
        b"\3" * third + b"\2" * (half - third) + b"\1" * half,
    ]


def test_creation_costs_what_changed_since_the_point_not_the_disk(tmp_path: Path) -> None:
    owner = SiteDisks()
    store, points = replica_store(tmp_path, owner)
    point = store.create_point_disks("test", 2, {"d0": "vm1 - Test/d0"})
    device = point.devices()["d0"]
    assert device.read(0, SIZE) == points[1]
    # The child holds what delta 3 overwrote, nothing else.
    assert device.child.own_ranges() == [(0, SIZE // 4)]
    assert owner.get("vm1 - Test/d0") is not None
    with pytest.raises(UnknownRecoveryPoint, match="no recovery point 7"):
        store.create_point_disks("failover", 7, {"d0": "vm1/d0"})
    owner.close()


def test_a_crash_between_the_copy_and_the_redo_leaves_the_point_disk_correct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = SiteDisks()
    store, points = replica_store(tmp_path, owner)
    store.create_point_disks("test", 1, {"d0": "vm1 - Test/d0"})

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt("killed before the commit point")

    # Killed after the capture copied the old bytes into the point disk, before the rename.
    monkeypatch.setattr(journal_module, "move", killed)
    with pytest.raises(KeyboardInterrupt):
        send(store, header(4, hours=1), [(SIZE // 2, b"\4" * (SIZE // 2))])
    monkeypatch.undo()
    owner.close()
    restarted = SiteDisks()
    again = VmStore(tmp_path, "vm1", owner=restarted)
    assert again.receiver_state().committed_sequence == 3
    assert again.point_disks["test"].devices()["d0"].read(0, SIZE) == points[0]

    # Killed after the rename, half-way through the redo: the restart redoes the journal.
    real_redo = journal_module.Journal._redo
    calls = []

    def half_redo(self: journal_module.Journal, log_path: Path, staged: object) -> object:
        calls.append(1)
        raise KeyboardInterrupt("killed during the redo")

    monkeypatch.setattr(journal_module.Journal, "_redo", half_redo)
    with pytest.raises(KeyboardInterrupt):
        send(again, header(4, hours=1), [(SIZE // 2, b"\4" * (SIZE // 2))])
    monkeypatch.setattr(journal_module.Journal, "_redo", real_redo)
    assert calls
    assert again.layout.journal.exists()
    restarted.close()
    final = VmStore(tmp_path, "vm1", owner=SiteDisks())
    assert final.receiver_state().committed_sequence == 4
    assert final.point_disks["test"].devices()["d0"].read(0, SIZE) == points[0]
    replica = open_disk(final.layout.replica("d0"))
    assert replica.read(SIZE // 2, SIZE // 2) == b"\4" * (SIZE // 2)
    replica.close()


def test_complete_merges_the_point_disk_into_the_replica_under_a_running_export(tmp_path: Path) -> None:
    owner = SiteDisks()
    store, points = replica_store(tmp_path, owner)
    point = store.create_point_disks("failover", 1, {"d0": "vm1/d0"})
    store.set_refusal("failed over")
    # The VM holds the export too, and writes through it.
    exported = owner.open("vm1/d0", point.disks["d0"][1], "vm")
    exported.write(1000, b"vm" * 100)
    expected = bytearray(points[0])
    expected[1000:1200] = b"vm" * 100
    with pytest.raises(DeltasRefused, match="failed over"):
        store.begin(header(4))
    replicas = store.complete_point_disks("failover")
    # The export now serves the replica itself, which holds the point and the VM's writes.
    assert exported.path == replicas["d0"] == store.layout.replica("d0").resolve()
    assert exported.read(0, SIZE) == bytes(expected)
    exported.write(0, b"after")
    expected[0:5] = b"after"
    owner.release(exported, "vm")
    replica = open_disk(store.layout.replica("d0"))
    assert replica.read(0, SIZE) == bytes(expected)
    replica.close()
    assert [p.sequence for p in store.recovery_points()] == [3]
    assert not (store.layout.root / "point-disks" / "failover").exists()
    assert not store.point_disks


def test_a_missing_replica_disk_is_refused_before_anything_changes(tmp_path: Path) -> None:
    owner = SiteDisks()
    store, _points = replica_store(tmp_path, owner)
    store.layout.replica("d0").rename(tmp_path / "moved.vhd")
    with pytest.raises(ReplicaDiskMissing, match="no disk 'd0'"):
        store.create_point_disks("test", 2, {"d0": "vm1 - Test/d0"})
    assert not (store.layout.root / "point-disks").exists()
    assert owner.get("vm1 - Test/d0") is None


def test_a_full_transfer_is_refused_under_a_point_disk(tmp_path: Path) -> None:
    owner = SiteDisks()
    store, _points = replica_store(tmp_path, owner)
    store.create_point_disks("test", 2, {"d0": "vm1 - Test/d0"})
    with pytest.raises(DeltasRefused, match="test failover VM"):
        store.begin(header(4, full=True))
    owner.close()


def test_preserve_fills_only_what_the_child_does_not_hold(tmp_path: Path) -> None:
    parent_path = create_fixed(tmp_path / "parent.vhd", SIZE)
    parent = open_disk(parent_path, writable=True)
    parent.write(0, b"p" * SIZE)
    child_path = create_differencing(tmp_path / "child.vhd", parent_path)
    reader = open_disk(parent_path)
    device = PointDevice(open_over(child_path, reader, writable=True), reader)
    device.write(512, b"v" * 700)  # sectors 1 and 2 (the rest of 2 from the parent)
    device.preserve(0, b"o" * 2048)
    parent.write(0, b"n" * 2048)
    assert device.read(0, 2048) == b"o" * 512 + b"v" * 700 + b"p" * 324 + b"o" * 512
    assert device.child.own_runs(0, 4096) == [(True, 0, 2048), (False, 2048, 2048)]
    assert sector_span(700, 10, SIZE) == (512, 512)
    device.close()
    parent.close()
