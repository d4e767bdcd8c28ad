"""One write barrier per VM, so a cycle cuts ALL of a VM's disks at the same instant.

Each disk's ``TrackedDevice`` already stops its own writes for its cut; a VM with several disks also
needs no write to land on one disk between the cuts of two others. Every write to any disk of the VM
passes the VM's ``WriteGate`` (shared); the cut (``cycle.cut``) holds it exclusively while it
snapshots every disk.
"""

from __future__ import annotations

from services.replica.primary.tracking import TrackedDevice, WriteGate
from services.replica.vhd.device import Buffer


class GatedDevice:
    """A VM disk as the NBD export and local writers see it: a ``BlockDevice`` whose changes pass the
    VM's gate and then the tracked device (which logs them)."""

    def __init__(self, tracked: TrackedDevice, gate: WriteGate):
        self.tracked = tracked
        self._gate = gate

    @property
    def virtual_size(self) -> int:
        return self.tracked.virtual_size

    @property
    def block_size(self) -> int:
        return self.tracked.block_size

    def read(self, offset: int, length: int) -> bytes:
        return self.tracked.read(offset, length)

    def write(self, offset: int, data: Buffer) -> None:
        self._gate.enter()
        try:
            self.tracked.write(offset, data)
        finally:
            self._gate.leave()

    def write_zeroes(self, offset: int, length: int) -> None:
        self._gate.enter()
        try:
            self.tracked.write_zeroes(offset, length)
        finally:
            self._gate.leave()

    def flush(self) -> None:
        self.tracked.flush()

    def allocated_ranges(self) -> list[tuple[int, int]]:
        return self.tracked.allocated_ranges()

    def close(self) -> None:
        self.tracked.close()
