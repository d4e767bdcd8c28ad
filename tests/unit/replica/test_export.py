"""export-recovery-point: a DR store's recovery points, streamed (``dr/export.py``) and written back to
a file by the SDK (``overland.replication.write_export``), equal the disk at each point — also when a
commit lands while an export is under way — and leave nothing behind."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overland.errors import DataLossError
from overland.replication import write_export
from overland.v1 import replica_pb2
from services.replica.dr.export import export_point
from services.replica.dr.store import VmStore
from services.replica.errors import UnknownVm
from services.replica.states import HOUR_NANOS
from services.replica.vhd import DynamicDisk, open_disk
from tests.unit.replica.test_replication_store import SIZE, T0, header, read_disk, send


def history_store(root: Path) -> tuple[VmStore, dict[int, bytes], list[int]]:
    """A store with 8 deltas an hour apart (3 hourly points kept) and the disk at each sequence."""
    rng = random.Random(11)
    clock = [T0]
    store = VmStore(root, "vm1", clock=lambda: clock[0])
    image = bytearray(SIZE)
    history = {}
    send(store, header(1, full=True, cut=T0, points=3), [(0, bytes(rng.randrange(256) for _ in range(4096)))])
    image[:4096] = read_disk(store.layout.replica("d0"))[:4096]
    history[1] = bytes(image)
    for seq in range(2, 9):
        offset = rng.randrange(0, SIZE - 8192) // 512 * 512
        data = bytes([rng.randrange(1, 256)]) * 8192
        image[offset : offset + len(data)] = data
        clock[0] = T0 + seq * HOUR_NANOS
        send(store, header(seq, cut=clock[0], points=3), [(offset, data)])
        history[seq] = bytes(image)
    return store, history, [p.sequence for p in store.recovery_points()]


def test_every_kept_point_exports_as_the_disk_at_that_point(tmp_path: Path) -> None:
    store, history, kept = history_store(tmp_path / "dr")
    assert len(kept) > 2
    for sequence in kept:
        target = tmp_path / f"point-{sequence}.vhd"
        written = write_export(export_point(store, f"vm1@{sequence}", ""), target)
        assert (written.disk, written.sequence) == ("d0", sequence)
        assert written.file_bytes == target.stat().st_size
        device = open_disk(target)
        try:
            # A dynamic VHD (which qemu-img recognizes without being told), equal to the point.
            assert isinstance(device, DynamicDisk)
            assert device.read(0, SIZE) == history[sequence]
        finally:
            device.close()
    assert not any(store.layout.exports.iterdir())


def test_a_commit_during_an_export_does_not_change_it(tmp_path: Path) -> None:
    store, history, kept = history_store(tmp_path / "dr")
    pieces = export_point(store, str(kept[0]), "d0")
    first = next(pieces)
    send(store, header(9, cut=T0 + 9 * HOUR_NANOS, points=3), [(0, b"\xee" * 8192)])
    written = write_export([first, *pieces], tmp_path / "latest.vhd")
    assert read_disk(tmp_path / "latest.vhd") == history[kept[0]]
    assert written.sequence == kept[0]


def test_what_is_not_there_is_refused(tmp_path: Path) -> None:
    store, _history, kept = history_store(tmp_path / "dr")
    for point, disk, words in (
        ("vm1@1", "", "no recovery point 1"),
        ("vm2@8", "", "not a recovery point of VM 'vm1'"),
        ("latest", "", "not a recovery point"),
        (str(kept[0]), "d9", "no disk 'd9'"),
    ):
        with pytest.raises(UnknownVm, match=words):
            list(export_point(store, point, disk))
    assert not store.layout.exports.exists() or not any(store.layout.exports.iterdir())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 64 * 1024),
    st.lists(st.tuples(st.integers(0, 64 * 1024), st.binary(min_size=1, max_size=4096)), max_size=8),
)
def test_write_export_writes_pieces_and_holes(
    tmp_path_factory: pytest.TempPathFactory, size: int, pieces: list[tuple[int, bytes]]
) -> None:
    target = tmp_path_factory.mktemp("export") / "out.vhd"
    stream = [replica_pb2.RecoveryPointData(disk="d0", sequence=3, file_bytes=size)]
    stream += [replica_pb2.RecoveryPointData(offset=offset, data=data) for offset, data in pieces]
    if any(offset + len(data) > size for offset, data in pieces):
        with pytest.raises(DataLossError):
            write_export(stream, target)
        assert not target.exists()
        assert not target.with_name("out.vhd.part").exists()
        return
    model = bytearray(size)
    for offset, data in pieces:
        model[offset : offset + len(data)] = data
    written = write_export(stream, target)
    assert target.read_bytes() == bytes(model)
    assert written.data_bytes == sum(len(data) for _offset, data in pieces)
