"""The DR site's storage of one VM's replica: stage a delta, commit it atomically, keep recovery points.

``VmStore`` is what the receiver talks to; it holds the VM's state and its lock, and hands each step
to the module that owns it: the files and ``state.json`` (``layout``), a delta arriving (``staging``),
its commit and redo (``journal``), and the recovery points (``points``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from overland.v1 import replica_pb2
from services.replica.codec.chunks import VERIFIED_CHECKSUMS, block_digests
from services.replica.dr import extent_log, points, staging
from services.replica.dr.journal import Journal
from services.replica.dr.layout import Layout
from services.replica.dr.staging import Staging
from services.replica.errors import UnknownVm
from services.replica.vhd.image import open_disk

HASH_READ_BYTES = 4 * 1024 * 1024


class VmStore:
    """One VM's replica from one primary. Methods are serialized by ``lock``."""

    def __init__(
        self,
        root: Path,
        vm_name: str,
        fault_apply_delay: float = 0.0,
        clock: Callable[[], int] = time.time_ns,
    ):
        self.layout = Layout(root / vm_name)
        self.vm_name = vm_name
        self.lock = threading.Lock()
        self.state = self.layout.load()
        self._journal = Journal(self.layout, vm_name, clock, fault_apply_delay)
        self._journal.recover(self.state)
        points.remove_unreferenced(self.layout, self.state)

    @property
    def known(self) -> bool:
        return self.layout.known

    def receiver_state(self) -> replica_pb2.ReceiverState:
        staged = staging.staged_header(self.layout, self.state.committed)
        return replica_pb2.ReceiverState(
            vm_name=self.vm_name,
            committed_sequence=self.state.committed,
            staged_sequence=staged.sequence if staged else 0,
            staged_chunks=staging.staged_chunks(self.layout) if staged else 0,
            chunk_checksums=VERIFIED_CHECKSUMS,
        )

    def begin(self, header: replica_pb2.DeltaHeader) -> Staging:
        """Validate the header and open staging, resuming from ``header.resume_from`` when it matches."""
        return staging.begin(self.layout, self.state, header, self.commit)

    def discard_staging(self) -> None:
        staging.discard(self.layout)

    def commit(
        self, header: replica_pb2.DeltaHeader, count: int, staged: list[extent_log.RecordInfo] | None = None
    ) -> replica_pb2.DeltaAck:
        """Commit the staged delta (see ``journal``); ``staged`` is where its records sit, if known."""
        return self._journal.commit(self.state, header, count, staged)

    def recovery_points(self) -> list[replica_pb2.RecoveryPoint]:
        return points.listing(self.vm_name, self.state.points)

    def materialize(self, sequence: int, out_dir: Path) -> dict[str, Path]:
        """Copies of the disks as they were at recovery point ``sequence`` (for failover and tests)."""
        return points.materialize(self.layout, self.state, self.vm_name, sequence, out_dir)

    def block_hashes(self, disk: str, block_size: int) -> Iterator[replica_pb2.BlockHashes]:
        path = self.layout.replica(disk)
        if not path.exists():
            raise UnknownVm(f"no replica disk {disk!r} of VM {self.vm_name!r} at this site")
        device = open_disk(path)
        try:
            per_read = max(block_size, HASH_READ_BYTES // block_size * block_size)
            for offset in range(0, device.virtual_size, per_read):
                data = device.read(offset, min(per_read, device.virtual_size - offset))
                yield replica_pb2.BlockHashes(
                    first_block=offset // block_size, digests=block_digests(data, block_size)
                )
        finally:
            device.close()
