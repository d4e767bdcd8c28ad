"""The change-tracking log on a real file, and the tracked device's crash-consistent snapshots."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.replica.primary.tracking import (
    ChangeLog,
    CutPending,
    TrackedDevice,
    TrackingInvalid,
    cut_path,
    snapshot_group,
)
from services.replica.vhd import DiskFormat, create_dynamic, open_disk

DISK = 1024 * 1024
BLOCK = 4096


def blocks_of(runs: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> set[int]:
    return {b for first, count in runs for b in range(first, first + count)}


def test_marks_survive_a_clean_reopen(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    assert not log.resync_required
    log.mark(0, 1)
    log.mark(BLOCK * 10 + 5, BLOCK)
    log.mark(0, 10)
    assert blocks_of(log.changed_runs()) == {0, 10, 11}
    log.close()
    again = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    assert not again.resync_required
    assert blocks_of(again.changed_runs()) == {0, 10, 11}
    again.close()


def test_rewrites_of_dirty_blocks_append_nothing(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    log.mark(0, BLOCK)
    size = (tmp_path / "d.hrl").stat().st_size
    for _ in range(50):
        log.mark(100, 200)
    assert (tmp_path / "d.hrl").stat().st_size == size
    log.close()


def test_unclean_close_requires_resync(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    log.mark(0, 1)
    # No close(): the header still says "open", as after a crash.
    again = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    assert again.resync_required
    assert "not closed cleanly" in again.resync_reason
    cut = again.cut()
    assert cut.resync
    assert blocks_of(cut.runs) == set(range(DISK // BLOCK))
    again.release(cut, shipped=True)
    assert not again.resync_required
    again.close()
    assert not ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK).resync_required


def test_a_log_past_half_the_disk_requires_resync(tmp_path: Path) -> None:
    # 18 blocks of 512 bytes: half the disk is 4608 bytes; records start at 4096 and take 32 bytes
    # each, so 16 one-block records fit and the 17th crosses the limit.
    disk = 18 * 512
    log = ChangeLog.open(tmp_path / "d.hrl", disk, 512)
    for block in range(16):
        log.mark(block * 512, 1)
    assert not log.resync_required
    log.mark(16 * 512, 1)
    assert log.resync_required
    assert "half the disk" in log.resync_reason
    size = (tmp_path / "d.hrl").stat().st_size
    log.mark(17 * 512, 1)
    assert (tmp_path / "d.hrl").stat().st_size == size, "no records once a resync is due"
    log.close()
    assert ChangeLog.open(tmp_path / "d.hrl", disk, 512).resync_required


def test_cut_starts_a_new_generation_and_release_forgets_it(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    log.mark(BLOCK * 3, 2 * BLOCK)
    cut = log.cut()
    assert cut.generation == 1
    assert log.generation == 2
    assert cut.byte_ranges() == [(3 * BLOCK, 2 * BLOCK)]
    assert cut.changed_bytes == 2 * BLOCK
    assert log.changed_runs() == []
    log.mark(0, 1)
    with pytest.raises(CutPending):
        log.cut()
    assert cut_path(tmp_path / "d.hrl").exists()
    log.release(cut, shipped=True)
    assert not cut_path(tmp_path / "d.hrl").exists()
    assert blocks_of(log.cut().runs) == {0}
    log.close()


def test_unshipped_cut_returns_to_the_open_generation(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    log.mark(0, BLOCK)
    cut = log.cut()
    log.mark(5 * BLOCK, 1)
    log.release(cut, shipped=False)
    assert blocks_of(log.changed_runs()) == {0, 5}
    log.close()
    assert blocks_of(ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK).changed_runs()) == {0, 5}


def test_a_cut_left_by_a_clean_stop_mid_cycle_is_merged_back(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    log.mark(0, BLOCK)
    log.cut()
    log.mark(7 * BLOCK, 1)
    log.close()
    again = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    assert not again.resync_required
    assert blocks_of(again.changed_runs()) == {0, 7}
    assert not cut_path(tmp_path / "d.hrl").exists()
    again.close()


def test_changed_geometry_or_garbage_header_requires_resync(tmp_path: Path) -> None:
    ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK).close()
    assert ChangeLog.open(tmp_path / "d.hrl", DISK * 2, BLOCK).resync_required
    (tmp_path / "g.hrl").write_bytes(b"garbage" * 1000)
    assert "unreadable" in ChangeLog.open(tmp_path / "g.hrl", DISK, BLOCK).resync_reason


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(TrackingInvalid):
        ChangeLog.open(tmp_path / "a.hrl", DISK, 3000)
    with pytest.raises(TrackingInvalid):
        ChangeLog.open(tmp_path / "b.hrl", 0, BLOCK)
    log = ChangeLog.open(tmp_path / "c.hrl", DISK, BLOCK)
    with pytest.raises(TrackingInvalid):
        log.mark(DISK - 1, 2)


def test_concurrent_marks_are_all_recorded(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)

    def writer(start: int) -> None:
        for block in range(start, DISK // BLOCK, 8):
            log.mark(block * BLOCK, 1)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(blocks_of(log.changed_runs())) == DISK // BLOCK
    log.close()
    assert len(blocks_of(ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK).changed_runs())) == DISK // BLOCK


def tracked(folder: Path) -> TrackedDevice:
    path = folder / "d.vhd"
    if not path.exists():
        create_dynamic(path, DISK, block_size=64 * 1024)
    return TrackedDevice(open_disk(path, writable=True), ChangeLog.open(folder / "d.hrl", DISK, BLOCK))


chunks = st.lists(
    st.tuples(st.integers(min_value=0, max_value=DISK - 1), st.binary(min_size=1, max_size=9000)).map(
        lambda w: (w[0], w[1][: DISK - w[0]])
    ),
    max_size=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=chunks, after=chunks, full=st.booleans())
def test_snapshot_reads_the_disk_as_it_was_at_the_cut(
    before: list[tuple[int, bytes]],
    after: list[tuple[int, bytes]],
    full: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    device = tracked(tmp_path_factory.mktemp("snap"))
    model = bytearray(DISK)
    touched: set[int] = set()
    for offset, data in before:
        device.write(offset, data)
        model[offset : offset + len(data)] = data
        touched |= set(range(offset // BLOCK, (offset + len(data) - 1) // BLOCK + 1))
    snapshot = device.snapshot(full=full)
    at_cut = bytes(model)
    expected_blocks = set(range(DISK // BLOCK)) if full else touched
    assert blocks_of(snapshot.cut.runs) == expected_blocks
    for offset, data in after:
        device.write(offset, data)
        model[offset : offset + len(data)] = data
    for offset, length in snapshot.byte_ranges():
        assert snapshot.read(offset, length) == at_cut[offset : offset + length]
    assert device.read(0, DISK) == model
    snapshot.release(shipped=True)
    device.close()


def test_snapshot_stays_consistent_under_concurrent_writers(tmp_path: Path) -> None:
    device = tracked(tmp_path)
    for block in range(DISK // BLOCK):
        device.write(block * BLOCK, bytes([block % 251]) * BLOCK)
    stop = threading.Event()

    def writer(seed: int) -> None:
        value = seed
        while not stop.is_set():
            value = (value * 1103515245 + 12345) % 2**31
            device.write((value % (DISK // BLOCK)) * BLOCK + value % 100, b"\xee" * 3000)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        snapshot = device.snapshot()
        first = snapshot.read(0, DISK)
        for _ in range(3):
            assert snapshot.read(0, DISK) == first
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert snapshot.overlay_bytes > 0
    snapshot.release(shipped=True)
    # Everything written since the cut is tracked in the new generation.
    assert device.tracker.changed_runs()
    device.close()


def test_size_mismatch_between_log_and_disk_is_refused(tmp_path: Path) -> None:
    create_dynamic(tmp_path / "d.vhd", DISK)
    with pytest.raises(TrackingInvalid):
        TrackedDevice(
            open_disk(tmp_path / "d.vhd", writable=True), ChangeLog.open(tmp_path / "x.hrl", DISK * 2)
        )


def test_snapshot_group_cuts_every_disk_at_one_instant(tmp_path: Path) -> None:
    devices = {}
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        devices[name] = tracked(folder)
        devices[name].write(0, name.encode() * 100)
    snapshots = snapshot_group(devices)
    for device in devices.values():
        device.write(0, b"after" * 20)
    assert snapshots["a"].read(0, 100) == b"a" * 100
    assert snapshots["b"].read(0, 100) == b"b" * 100
    for snapshot in snapshots.values():
        snapshot.release(shipped=True)
    # A failed group cut leaves no snapshot behind: "a" is busy, so "b" must be released again.
    busy = devices["a"].snapshot()
    with pytest.raises(CutPending):
        snapshot_group(devices)
    busy.release(shipped=True)
    assert set(snapshot_group(devices)) == {"a", "b"}


def test_full_snapshot_keeps_the_allocation_of_the_cut_instant(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"")
    os.truncate(raw, DISK)
    device = TrackedDevice(
        open_disk(raw, writable=True, fmt=DiskFormat.RAW), ChangeLog.open(tmp_path / "d.hrl", DISK, BLOCK)
    )
    device.write(8 * BLOCK, b"\x07" * BLOCK)
    snapshot = device.snapshot(full=True)
    at_cut = snapshot.allocated_ranges()
    assert any(start <= 8 * BLOCK < start + length for start, length in at_cut)
    device.write_zeroes(8 * BLOCK, BLOCK)  # punches the hole after the cut
    assert not any(start <= 8 * BLOCK < start + length for start, length in device.allocated_ranges())
    assert snapshot.allocated_ranges() == at_cut
    assert snapshot.read(8 * BLOCK, BLOCK) == b"\x07" * BLOCK
    snapshot.release(shipped=True)
    device.close()
