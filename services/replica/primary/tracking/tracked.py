"""A ``BlockDevice`` whose every change is logged before it happens, with crash-consistent snapshots.

Consistency of a recovery point: ``snapshot`` briefly stops writes (waiting for those in flight), cuts
the change log and installs a copy-before-write overlay for the closed generation's blocks, then lets
writes go on at once. A later write to a block of the snapshot first saves the block's old content to
the overlay, so ``Snapshot.read`` always returns the disk as it was at the cut instant, while the guest
keeps writing. ``Snapshot.release`` drops the overlay.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from services.replica.locks import WriteGate
from services.replica.primary.tracking.errors import TrackingInvalid
from services.replica.primary.tracking.extents import BlockSet, block_span
from services.replica.primary.tracking.log import ChangeLog, Cut
from services.replica.vhd.device import BlockDevice, Buffer, check_range, read_exact, write_all


class Snapshot:
    """The disk's content at a cut, for the blocks the cut names. Other blocks read the live disk."""

    def __init__(self, device: TrackedDevice, cut: Cut, overlay_dir: Path, allocated: list[tuple[int, int]]):
        self.cut = cut
        self._allocated = allocated
        self._device = device
        self._blocks = BlockSet(-(-cut.disk_size // cut.block_size))
        self._blocks.add_runs(cut.runs)
        self._saved: dict[int, int] = {}
        # Lives until release(), beyond any with-block here; closing it deletes it.
        self._overlay = tempfile.TemporaryFile(dir=overlay_dir, prefix="cow-")  # noqa: SIM115
        self._lock = threading.Lock()
        self._released = False

    @property
    def generation(self) -> int:
        return self.cut.generation

    def byte_ranges(self) -> list[tuple[int, int]]:
        """What this snapshot's delta is: the changed blocks as ``(offset, length)``."""
        return self.cut.byte_ranges()

    def allocated_ranges(self) -> list[tuple[int, int]]:
        """The disk's allocated ranges AT THE CUT (for a sparse-aware initial copy); holes punched or
        blocks allocated later do not change it. For a delta cut, the changed ranges.
        """
        return list(self._allocated)

    @property
    def overlay_bytes(self) -> int:
        """How much old content the copy-before-write overlay holds now."""
        with self._lock:
            return len(self._saved) * self.cut.block_size

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` as they were at the cut."""
        check_range(offset, length, self.cut.disk_size)
        block_size = self.cut.block_size
        first, count = block_span(offset, length, block_size)
        with self._lock:
            if not any(block in self._saved for block in range(first, first + count)):
                # The common case (nothing written since the cut): one read, no per-block copies to join.
                return self._device.inner.read(offset, length)
        parts = []
        for block in range(first, first + count):
            lo = max(offset, block * block_size)
            hi = min(offset + length, (block + 1) * block_size)
            # Held across the device read: a writer must save this block before it may change it.
            with self._lock:
                slot = self._saved.get(block)
                if slot is None:
                    parts.append(self._device.inner.read(lo, hi - lo))
                else:
                    start = slot + lo - block * block_size
                    parts.append(read_exact(self._overlay.fileno(), start, hi - lo))
        return b"".join(parts)

    def preserve(self, offset: int, length: int) -> None:
        """Save the old content of the snapshot's blocks in the range before a write changes them."""
        block_size = self.cut.block_size
        first, count = block_span(offset, length, block_size)
        with self._lock:
            if self._released:
                return
            for block in range(first, first + count):
                if block in self._saved or block not in self._blocks:
                    continue
                start = block * block_size
                old = self._device.inner.read(start, min(block_size, self.cut.disk_size - start))
                slot = len(self._saved) * block_size
                write_all(self._overlay.fileno(), slot, old)
                self._saved[block] = slot

    def release(self, shipped: bool) -> None:
        """Finish the cycle: drop the overlay and release the cut in the change log."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._overlay.close()
        self._device.finish(self, shipped)


class TrackedDevice:
    """Wraps a device so each write, trim or write-zeroes is logged (durably) before it reaches the disk."""

    def __init__(self, device: BlockDevice, tracker: ChangeLog, overlay_dir: Path | None = None):
        if tracker.disk_size != device.virtual_size:
            raise TrackingInvalid(
                f"tracking log is for {tracker.disk_size} bytes, the disk has {device.virtual_size}"
            )
        self.inner = device
        self.tracker = tracker
        self._overlay_dir = overlay_dir or tracker.path.parent
        self._gate = WriteGate()
        self._snapshot: Snapshot | None = None

    @property
    def virtual_size(self) -> int:
        return self.inner.virtual_size

    @property
    def block_size(self) -> int:
        return self.inner.block_size

    def read(self, offset: int, length: int) -> bytes:
        return self.inner.read(offset, length)

    def write(self, offset: int, data: Buffer) -> None:
        self._change(offset, len(data), lambda: self.inner.write(offset, data))

    def write_zeroes(self, offset: int, length: int) -> None:
        self._change(offset, length, lambda: self.inner.write_zeroes(offset, length))

    def _change(self, offset: int, length: int, apply: Callable[[], None]) -> None:
        check_range(offset, length, self.virtual_size)
        self._gate.enter()
        try:
            self.tracker.mark(offset, length)
            snapshot = self._snapshot
            if snapshot is not None:
                snapshot.preserve(offset, length)
            apply()
        finally:
            self._gate.leave()

    def flush(self) -> None:
        self.inner.flush()

    def allocated_ranges(self) -> list[tuple[int, int]]:
        return self.inner.allocated_ranges()

    def close(self) -> None:
        self.inner.close()
        self.tracker.close()

    def snapshot(self, full: bool = False) -> Snapshot:
        """Cut the change log at one instant and return a stable view of the closed generation.

        ``full`` snapshots every block (initial replication, resync).
        """
        return snapshot_group({"": self}, full)[""]

    def cut_locked(self, full: bool) -> Snapshot:
        """Cut while the caller holds this device's write gate (see ``snapshot_group``)."""
        cut = self.tracker.cut(full=full)
        # Taken inside the gate, so it is the allocation at the same instant as the cut.
        allocated = self.inner.allocated_ranges() if full else cut.byte_ranges()
        self._snapshot = Snapshot(self, cut, self._overlay_dir, allocated)
        return self._snapshot

    @property
    def gate(self) -> WriteGate:
        return self._gate

    def finish(self, snapshot: Snapshot, shipped: bool) -> None:
        """Called by ``Snapshot.release``."""
        self._gate.lock()
        try:
            if self._snapshot is snapshot:
                self._snapshot = None
            self.tracker.release(snapshot.cut, shipped)
        finally:
            self._gate.unlock()


def snapshot_group(devices: Mapping[str, TrackedDevice], full: bool = False) -> dict[str, Snapshot]:
    """Snapshot several disks (a VM's) at ONE instant: writes to all of them stop, all are cut, then
    all resume. A multi-disk VM's recovery point is then crash-consistent across its disks.
    """
    ordered = sorted(devices.items(), key=lambda item: id(item[1]))
    for _name, device in ordered:
        device.gate.lock()
    snapshots: dict[str, Snapshot] = {}
    try:
        for name, device in ordered:
            snapshots[name] = device.cut_locked(full)
    except BaseException:
        for _name, device in ordered:
            device.gate.unlock()
        for snapshot in snapshots.values():
            snapshot.release(shipped=False)
        raise
    for _name, device in ordered:
        device.gate.unlock()
    return snapshots
