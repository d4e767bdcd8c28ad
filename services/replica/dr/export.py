"""Export-VMReplicationRecoveryPoint, after a fashion: one disk of a recovery point as a VHD file, streamed
to whoever asked (``overland replica export-recovery-point`` writes it to a file).

The point is materialized into the VM's ``exports/`` folder first: under the store's commit lock the replica
disk is copied (a reflink where the filesystem has them, else a sparse copy: that much free space is
needed meanwhile) and the newer points' undo layers are linked (``points.copy_point``); then, without
the lock, the undo layers are applied, the copy (a fixed VHD, as replicas are) is made a dynamic VHD
of its data ranges (all-zero pieces left out) — compact, and one qemu-img recognizes as VHD without
being told (a fixed VHD has its footer only at its end, and probes as raw) — and that is read out.
Ranges without data (holes) are not sent; the receiver leaves them as holes of a file of the
announced size.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from overland.v1 import replica_pb2
from services.replica.dr import points
from services.replica.dr.layout import storage_errors
from services.replica.dr.store import VmStore
from services.replica.errors import UnknownVm
from services.replica.vhd import create_dynamic, open_disk
from services.replica.vhd.device import data_ranges

PIECE_BYTES = 1024 * 1024


def pick_disk(store: VmStore, disk: str) -> str:
    """The disk to export: the one named, or the VM's only one."""
    disks = sorted(store.state.disk_sizes)
    if disk:
        if disk not in disks:
            raise UnknownVm(f"VM {store.vm_name!r} has no disk {disk!r} (it has {', '.join(disks)})")
        return disk
    if len(disks) != 1:
        raise UnknownVm(f"VM {store.vm_name!r} has disks {', '.join(disks)}: name one (--disk)")
    return disks[0]


def export_point(store: VmStore, point: str, disk: str) -> Iterator[replica_pb2.RecoveryPointData]:
    """Disk ``disk`` of recovery point ``point`` (its id or sequence) of ``store``'s VM: first what the
    file is, then its data ranges in pieces of at most ``PIECE_BYTES``."""
    if not store.known:
        raise UnknownVm(f"this site has no replica of VM {store.vm_name!r}")
    sequence = points.point_sequence(store.vm_name, point)
    if sequence is None:
        raise UnknownVm(
            f"{point!r} is not a recovery point of VM {store.vm_name!r} (VM@SEQUENCE or SEQUENCE)"
        )
    name = pick_disk(store, disk)
    folder = store.layout.exports / uuid.uuid4().hex[:12]
    try:
        # Under the commit lock: no commit, failover merge or adoption changes the replica disks or
        # the undo layers while they are copied and linked; deltas go on streaming in meanwhile.
        with store.commit_lock, storage_errors("copying a recovery point to export"):
            copy = points.copy_point(store.layout, store.state, store.vm_name, sequence, folder, disks=[name])
        with storage_errors("materializing a recovery point to export"):
            path = to_dynamic(copy.finish()[name], folder / f"{name}-dynamic.vhd")
        size = path.stat().st_size
        yield replica_pb2.RecoveryPointData(disk=name, sequence=sequence, file_bytes=size)
        for offset, data in read_data(path):
            yield replica_pb2.RecoveryPointData(offset=offset, data=data)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def to_dynamic(fixed: Path, out: Path) -> Path:
    """The fixed VHD ``fixed`` as a new dynamic VHD at ``out``: its data ranges, all-zero pieces left out."""
    source = open_disk(fixed)
    size = source.virtual_size
    source.close()
    create_dynamic(out, size)
    target = open_disk(out, writable=True)
    fd = os.open(fixed, os.O_RDONLY)
    try:
        # A fixed VHD's data starts at byte 0 (its footer follows it).
        for start, length in data_ranges(fd, 0, size):
            for piece in range(start, start + length, PIECE_BYTES):
                data = os.pread(fd, min(PIECE_BYTES, start + length - piece), piece)
                if data != bytes(len(data)):
                    target.write(piece, data)
    finally:
        os.close(fd)
        target.close()
    return out


def read_data(path: Path) -> Iterator[tuple[int, bytes]]:
    """The data ranges of a (sparse) file in pieces: holes are skipped."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, length in data_ranges(fd, 0, os.fstat(fd).st_size):
            for piece in range(start, start + length, PIECE_BYTES):
                yield piece, os.pread(fd, min(PIECE_BYTES, start + length - piece), piece)
    finally:
        os.close(fd)
