"""Recovery points at the DR site, on disk: undo layers captured at commit, pruned by retention (merging
layers), and materialized into copies of the disks as they were at a point.

The pure part (which points retention keeps, how layers overlay) is ``recovery``; the layers are
``extent_log`` files under ``points/``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from overland.v1 import replica_pb2
from services.replica.dr import extent_log
from services.replica.dr.layout import Layout, Point, VmState, storage_errors
from services.replica.dr.point_disks import PointDevice, sector_span
from services.replica.dr.recovery import PointInfo, overlay, retained
from services.replica.errors import UnknownVm
from services.replica.files import move
from services.replica.vhd.device import BlockDevice
from services.replica.vhd.image import open_disk

# A disk copy at the DR site (cp): generous, and still bounded.
COPY_SECONDS = 3600


def point_id(vm_name: str, sequence: int) -> str:
    return f"{vm_name}@{sequence}"


def point_sequence(vm_name: str, point: str) -> int | None:
    """The sequence a point id (``VM@SEQUENCE``) or a bare sequence names; None if neither."""
    name, sep, number = point.rpartition("@")
    if sep and name != vm_name:
        return None
    return int(number) if number.isdigit() else None


def capture_undo(
    layout: Layout,
    staged: list[extent_log.RecordInfo] | None,
    *,
    undo: bool = True,
    point_disks: Sequence[Mapping[str, PointDevice]] = (),
    fault_delay: float = 0.0,
) -> None:
    """Read the bytes the staged delta will overwrite (before the commit) and keep them: in
    ``staging/undo.log`` (the undo layer, when ``undo``), and in every point disk that holds nothing
    there yet (``point_disks``: their devices by disk name). Both are durable when this returns.

    ``staged`` is where the records of chunks.log are, when the caller knows; else the log is scanned.
    ``fault_delay``: a pause after each record (crash tests kill the process in the middle).
    """
    devices: dict[str, BlockDevice] = {}
    log_fd = (
        os.open(layout.staging / "undo.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if undo else -1
    )
    try:
        with (layout.staging / "chunks.log").open("rb") as file:
            for info in extent_log.scan(file) if staged is None else staged:
                device = devices.get(info.disk) or devices.setdefault(
                    info.disk, layout.open_replica(info.disk)
                )
                # Point disks hold whole sectors: read the sectors the record touches.
                start, length = sector_span(info.offset, info.length, device.virtual_size)
                old = device.read(start, length)
                if undo:
                    mine = old[info.offset - start : info.offset - start + info.length]
                    os.write(
                        log_fd,
                        extent_log.encode_record(info.index, info.disk, info.offset, info.length, mine),
                    )
                for point in point_disks:
                    target = point.get(info.disk)
                    if target is not None:
                        target.preserve(start, old)
                if fault_delay:
                    time.sleep(fault_delay)
        if undo:
            os.fsync(log_fd)
        for point in point_disks:
            for target in point.values():
                target.flush()
    finally:
        if log_fd >= 0:
            os.close(log_fd)
        for device in devices.values():
            device.close()


def keep_undo(layout: Layout, sequence: int) -> str:
    """Move the committed journal's undo layer (if it captured one) into ``points/``; its new name."""
    undo_path = layout.journal / "undo.log"
    if not undo_path.exists():
        return ""
    layout.points.mkdir(parents=True, exist_ok=True)
    undo = f"{sequence}-{uuid.uuid4().hex[:8]}.undo"
    move(undo_path, layout.points / undo)
    return undo


def prune(layout: Layout, state: VmState, now_nanos: int) -> None:
    """Drop points retention no longer keeps, merging each dropped undo layer into the next newer one."""
    infos = [PointInfo(p.sequence, p.time_nanos) for p in state.points]
    kept, hourly = retained(infos, now_nanos, state.additional_points)
    points = sorted(state.points, key=lambda p: p.sequence)
    for i in range(len(points) - 1, -1, -1):
        point = points[i]
        if point.sequence in kept:
            continue
        newer = next((p for p in points[i + 1 :] if p.sequence in kept), None)
        if newer is not None and point.undo and newer.undo:
            newer.undo = _merge_undo(layout, newer.undo, point.undo, newer.sequence)
    survivors = [p for p in points if p.sequence in kept]
    for point in survivors:
        point.hourly = point.sequence in hourly
    if survivors:
        # The oldest point's undo would restore a point nobody keeps.
        survivors[0].undo = ""
    state.points = survivors


def _merge_undo(layout: Layout, newer: str, older: str, sequence: int) -> str:
    """A layer equal to applying ``newer`` then ``older`` (older wins where both cover a byte)."""
    sources = [layout.points / newer, layout.points / older]
    indexes = [_index(path) for path in sources]
    name = f"{sequence}-{uuid.uuid4().hex[:8]}.undo"
    fds = [os.open(path, os.O_RDONLY) for path in sources]
    out = os.open(layout.points / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with storage_errors("merging recovery points"):
            for disk in sorted({info.disk for index in indexes for info in index}):
                per_disk = [[i for i in index if i.disk == disk] for index in indexes]
                layers = [[(i.offset, i.length) for i in infos] for infos in per_disk]
                for n, piece in enumerate(overlay(layers)):
                    info = per_disk[piece.layer][piece.extent]
                    data = (
                        None
                        if info.zero
                        else os.pread(
                            fds[piece.layer],
                            piece.length,
                            info.data_position + piece.offset - info.offset,
                        )
                    )
                    os.write(out, extent_log.encode_record(n, disk, piece.offset, piece.length, data))
            os.fsync(out)
    finally:
        os.close(out)
        for fd in fds:
            os.close(fd)
    return name


def remove_unreferenced(layout: Layout, state: VmState) -> None:
    """Delete undo layers no point names (merged away, or left by a crash before the state named them)."""
    if not layout.points.exists():
        return
    referenced = {p.undo for p in state.points}
    for path in layout.points.iterdir():
        if path.name not in referenced:
            path.unlink()


def listing(vm_name: str, points: list[Point]) -> list[replica_pb2.RecoveryPoint]:
    """The points, newest first, as the API shows them."""
    return [
        replica_pb2.RecoveryPoint(
            id=point_id(vm_name, p.sequence),
            vm_name=vm_name,
            sequence=p.sequence,
            create_time_unix_nanos=p.time_nanos,
            hourly=p.hourly,
        )
        for p in sorted(points, key=lambda p: p.sequence, reverse=True)
    ]


@dataclass
class PointCopy:
    """Copies of disks as they are now, and the undo layers (newest first) that take them back to a
    recovery point: made under the store's lock (``copy_point``), finished without it (``finish``)."""

    disks: dict[str, Path]
    undo: list[Path]

    def finish(self) -> dict[str, Path]:
        """Apply the undo layers: the copies are now the disks at the point."""
        for layer in self.undo:
            _apply_undo(layer, self.disks)
        return self.disks


def copy_point(
    layout: Layout,
    state: VmState,
    vm_name: str,
    sequence: int,
    out_dir: Path,
    *,
    disks: Iterable[str] | None = None,
) -> PointCopy:
    """The start of a copy of ``disks`` (all by default) at recovery point ``sequence``: the replica
    disks copied (reflinked where the filesystem can, sparse) and the undo layers of the newer points
    linked, so a later commit or prune (which replace those files, never change them) leaves the copy
    as it was. The caller holds the store's lock; ``PointCopy.finish`` needs it no longer."""
    points = sorted(state.points, key=lambda p: p.sequence, reverse=True)
    if sequence not in {p.sequence for p in points}:
        raise UnknownVm(f"VM {vm_name!r} has no recovery point {sequence}")
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    for disk in state.disk_sizes if disks is None else disks:
        if disk not in state.disk_sizes:
            raise UnknownVm(
                f"VM {vm_name!r} has no disk {disk!r} (it has {', '.join(sorted(state.disk_sizes))})"
            )
        target = out_dir / f"{disk}.vhd"
        subprocess.run(
            ["cp", "--reflink=auto", "--sparse=always", str(layout.replica(disk)), str(target)],
            check=True,
            timeout=COPY_SECONDS,
        )
        outputs[disk] = target
    undo = []
    for point in points:
        if point.sequence <= sequence:
            break
        linked = out_dir / point.undo
        os.link(layout.points / point.undo, linked)
        undo.append(linked)
    return PointCopy(outputs, undo)


def materialize(
    layout: Layout, state: VmState, vm_name: str, sequence: int, out_dir: Path
) -> dict[str, Path]:
    """Copies of the disks as they were at recovery point ``sequence`` (for failover and tests)."""
    copy = copy_point(layout, state, vm_name, sequence, out_dir)
    try:
        return copy.finish()
    finally:
        for layer in copy.undo:
            layer.unlink(missing_ok=True)


def _apply_undo(path: Path, outputs: dict[str, Path]) -> None:
    devices = {disk: open_disk(target, writable=True) for disk, target in outputs.items()}
    fd = os.open(path, os.O_RDONLY)
    try:
        with path.open("rb") as file:
            for info in extent_log.scan(file):
                if info.zero:
                    devices[info.disk].write_zeroes(info.offset, info.length)
                else:
                    devices[info.disk].write(info.offset, extent_log.read_data(fd, info))
    finally:
        os.close(fd)
        for device in devices.values():
            device.close()


def _index(path: Path) -> list[extent_log.RecordInfo]:
    with path.open("rb") as file:
        return list(extent_log.scan(file))
