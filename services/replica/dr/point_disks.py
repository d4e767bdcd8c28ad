"""Point disks: a VM at a recovery point, as a differencing VHD over the replica disk (test failover,
unplanned failover), kept correct while the DR site goes on committing deltas.

The replica disk always holds the latest committed point; each older point is an undo layer. A point
disk for point ``p`` is a differencing VHD whose parent is the replica disk, created **seeded** with
the bytes of the undo layers from ``p`` to now (``seed``): so it reads as point ``p``, and it costs
what changed since ``p``, never the disk's size. From then on every commit, before it overwrites
replica bytes, copies the old bytes into every point disk that holds nothing there yet
(``PointDevice.preserve``, called from the commit's capture step, which reads those bytes anyway for
the undo layer). So at every instant a point disk reads as point ``p`` plus what its VM wrote.

Crash safety, by the commit's order (``journal``): capture (old bytes into the undo layer and into
the point disks, which are then flushed), the rename of ``staging`` to ``journal`` (the commit
point), then the redo into the replica. A kill before the rename leaves the replica untouched, and
what was copied into a point disk equals the replica's bytes there, so the point disk reads the same.
A kill after it finds the point disks already durable, and the restart's redo only changes replica
bytes every point disk holds itself.

Concurrency with the VM on a point disk: ``preserve`` holds the device's gate exclusively, so no read
of the VM is in flight that looked at the child's bitmap before the copy and reads the parent after
the redo; reads and writes hold it shared. Complete (``retire_into``) copies the child into the
replica, switches the export to the replica and keeps serving stragglers from it.

A point disk is owned by the site's disk owner like any disk (its export is the failover VM's disk),
opened with ``open_point_disk`` rather than ``open_disk``: the parent is the replica opened here
read-only, not through the child's locators (the DR commit writes the parent on purpose).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.replica.disks import SiteDisk, SiteDisks
from services.replica.dr import extent_log
from services.replica.dr.layout import Layout, VmState
from services.replica.dr.recovery import overlay
from services.replica.errors import ReplicaDiskMissing, UnknownRecoveryPoint
from services.replica.locks import WriteGate
from services.replica.vhd import BlockDevice, Buffer, DynamicDisk, create_differencing, open_disk, open_over
from services.replica.vhd.device import merge_ranges

SECTOR = 512
# Complete copies the child into the replica in pieces of this size.
COPY_BYTES = 4 * 1024 * 1024
# What the site's disk owner knows a point disk's store's hold by.
POINT_USER = "point"
FOLDER = "point-disks"


def sector_span(offset: int, length: int, size: int) -> tuple[int, int]:
    """``[offset, offset + length)`` widened to whole sectors (within a disk of ``size`` bytes)."""
    start = offset // SECTOR * SECTOR
    end = min(size, -(-(offset + length) // SECTOR) * SECTOR)
    return start, end - start


class PointDevice:
    """The device a point disk's export serves: the child (a differencing VHD) over the replica."""

    def __init__(self, child: DynamicDisk, parent: BlockDevice):
        self.child = child
        self.parent = parent
        self._gate = WriteGate()
        # After complete, everything goes to the replica (the export's new device).
        self._forward: BlockDevice | None = None
        # Ranges written since ``track_writes`` (complete's second pass copies them again).
        self._dirty: list[tuple[int, int]] | None = None
        self._dirty_lock = threading.Lock()

    @property
    def virtual_size(self) -> int:
        return self.child.virtual_size

    @property
    def block_size(self) -> int:
        return self.child.block_size

    def _device(self) -> BlockDevice:
        return self._forward if self._forward is not None else self.child

    def read(self, offset: int, length: int) -> bytes:
        self._gate.enter()
        try:
            return self._device().read(offset, length)
        finally:
            self._gate.leave()

    def write(self, offset: int, data: Buffer) -> None:
        self._gate.enter()
        try:
            self._device().write(offset, data)
            self._note(offset, len(data))
        finally:
            self._gate.leave()

    def write_zeroes(self, offset: int, length: int) -> None:
        self._gate.enter()
        try:
            self._device().write_zeroes(offset, length)
            self._note(offset, length)
        finally:
            self._gate.leave()

    def _note(self, offset: int, length: int) -> None:
        if self._dirty is not None:
            with self._dirty_lock:
                if self._dirty is not None:
                    self._dirty.append((offset, length))

    def flush(self) -> None:
        self._device().flush()

    def allocated_ranges(self) -> list[tuple[int, int]]:
        return self._device().allocated_ranges()

    def close(self) -> None:
        """Close the child and its parent (after complete, the replica belongs to the export)."""
        if self._forward is None:
            self.child.close()
            self.parent.close()

    def preserve(self, offset: int, old: bytes) -> None:
        """The replica's bytes ``old`` at ``offset`` (whole sectors) are about to be overwritten: copy
        them into every sector the child does not hold yet, with the VM's I/O held off."""
        if offset % SECTOR or (len(old) % SECTOR and offset + len(old) != self.virtual_size):
            raise ValueError(f"preserve takes whole sectors, got [{offset}, {offset + len(old)})")
        self._gate.lock()
        try:
            if self._forward is not None:
                return
            view = memoryview(old)
            for present, at, length in self.child.own_runs(offset, len(old)):
                if not present:
                    self.child.write(at, view[at - offset : at - offset + length])
        finally:
            self._gate.unlock()

    def track_writes(self) -> None:
        """Start noting the ranges written, for the second pass of ``retire_into``."""
        with self._dirty_lock:
            self._dirty = []

    def copy_into(self, replica: BlockDevice, ranges: Iterable[tuple[int, int]]) -> None:
        for offset, length in ranges:
            for at in range(offset, offset + length, COPY_BYTES):
                n = min(COPY_BYTES, offset + length - at)
                replica.write(at, self.child.read(at, n))

    def retire_into(self, replica: BlockDevice) -> None:
        """Complete's last step (the export's own gate held by the caller): with the VM's I/O held
        off, copy what was written since the first pass, then serve everything from ``replica``."""
        self._gate.lock()
        try:
            with self._dirty_lock:
                dirty, self._dirty = self._dirty or [], None
            self.copy_into(replica, merge_ranges(dirty))
            replica.flush()
            self._forward = replica
            self.child.close()
            self.parent.close()
        finally:
            self._gate.unlock()


def open_point_disk(path: Path, replica: Path) -> PointDevice:
    """A point disk's device: the child at ``path`` over the replica at ``replica`` (read-only)."""
    parent = open_disk(replica)
    try:
        return PointDevice(open_over(path, parent, writable=True), parent)
    except BaseException:
        parent.close()
        raise


@dataclass
class PointDisks:
    """The point disks of one tag (``test``, ``failover``) at one recovery point: a disk each."""

    tag: str
    sequence: int
    # disk name -> (export name, child path)
    disks: dict[str, tuple[str, Path]]
    held: dict[str, SiteDisk] = field(default_factory=dict)

    def devices(self) -> dict[str, PointDevice]:
        return {disk: owned.base for disk, owned in self.held.items() if isinstance(owned.base, PointDevice)}

    def encode(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "sequence": self.sequence,
            "disks": {disk: [export, str(path)] for disk, (export, path) in self.disks.items()},
        }

    @classmethod
    def decode(cls, doc: Mapping[str, object]) -> PointDisks:
        disks = doc["disks"]
        if not isinstance(disks, dict):
            raise TypeError("disks is not an object")
        return cls(
            str(doc["tag"]),
            int(str(doc["sequence"])),
            {str(disk): (str(pair[0]), Path(pair[1])) for disk, pair in disks.items()},
        )


def folder(layout: Layout, tag: str) -> Path:
    return layout.root / FOLDER / tag


def check_point(state: VmState, vm_name: str, sequence: int) -> None:
    if sequence not in {p.sequence for p in state.points}:
        kept = sorted(p.sequence for p in state.points)
        raise UnknownRecoveryPoint(f"VM {vm_name!r} has no recovery point {sequence}; it has {kept}")


def check_replica_disks(layout: Layout, state: VmState, vm_name: str) -> None:
    missing = [disk for disk in sorted(state.disk_sizes) if not layout.replica(disk).is_file()]
    if missing:
        raise ReplicaDiskMissing(
            f"the replica of VM {vm_name!r} has no disk {missing[0]!r} at this site "
            f"({layout.replica(missing[0])}): nothing was changed"
        )


def create(
    layout: Layout,
    state: VmState,
    owner: SiteDisks,
    point: PointDisks,
) -> PointDisks:
    """Make ``point``'s disks (a child per replica disk, seeded to ``point.sequence``) and open them
    through ``owner`` under their export names. The caller holds the store's commit lock and
    registers the result in the state."""
    where = folder(layout, point.tag)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    try:
        for disk, (_export, path) in point.disks.items():
            create_differencing(path, layout.replica(disk))
        reopen(layout, owner, point)
        seed(layout, state, point.sequence, point.devices())
        for device in point.devices().values():
            device.flush()
    except BaseException:
        release(owner, point)
        shutil.rmtree(where, ignore_errors=True)
        raise
    return point


def seed(layout: Layout, state: VmState, sequence: int, devices: Mapping[str, BlockDevice]) -> None:
    """Write into ``devices`` the bytes of every undo layer from point ``sequence`` to now, where
    several cover a byte the oldest winning (as ``materialize`` applies them, newest first)."""
    layers = [
        layout.points / p.undo
        for p in sorted(state.points, key=lambda p: p.sequence, reverse=True)
        if p.sequence > sequence and p.undo
    ]
    indexes = []
    for path in layers:
        with path.open("rb") as file:
            indexes.append(list(extent_log.scan(file)))
    fds = [os.open(path, os.O_RDONLY) for path in layers]
    try:
        for disk, device in devices.items():
            per_layer = [[info for info in index if info.disk == disk] for index in indexes]
            extents = [[(info.offset, info.length) for info in infos] for infos in per_layer]
            for piece in overlay(extents):
                info = per_layer[piece.layer][piece.extent]
                if info.zero:
                    device.write_zeroes(piece.offset, piece.length)
                else:
                    at = info.data_position + piece.offset - info.offset
                    device.write(piece.offset, os.pread(fds[piece.layer], piece.length, at))
    finally:
        for fd in fds:
            os.close(fd)


def reopen(layout: Layout, owner: SiteDisks, point: PointDisks) -> PointDisks:
    """Open ``point``'s disks through ``owner`` (made just now, or registered before a restart)."""
    try:
        for disk, (export, path) in point.disks.items():
            replica = layout.replica(disk)
            point.held[disk] = owner.open(
                export, path, POINT_USER, opener=functools.partial(open_point_disk, replica=replica)
            )
    except BaseException:
        release(owner, point)
        raise
    return point


def release(owner: SiteDisks, point: PointDisks) -> None:
    for owned in point.held.values():
        owner.release(owned, POINT_USER)
    point.held.clear()


def remove_unregistered(layout: Layout, tags: Iterable[str]) -> None:
    """Delete point disk folders no registration names (a crash between making and registering)."""
    root = layout.root / FOLDER
    if not root.exists():
        return
    keep = set(tags)
    for path in root.iterdir():
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
