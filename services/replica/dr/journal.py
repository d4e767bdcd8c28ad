"""The commit of a staged delta at the DR site: the journal rename, the redo, and the journal's retirement.

Committing first captures the undo layer (when recovery points are kept), then renames ``staging/`` to
``journal/``: that rename is the commit point. The journal is then applied to the replica disks (redo,
idempotent), the state saved and the delta acked. Making the replica's writes durable and deleting the
journal happen after the ack, in the background; until they have, a restart (``recover``) redoes the
journal, and the next commit finishes the previous one first.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from overland.v1 import replica_pb2
from services.replica.dr import extent_log, points
from services.replica.dr.layout import (
    TRASH_PREFIX,
    Layout,
    Point,
    VmState,
    close_all,
    remove_quietly,
    storage_errors,
)
from services.replica.dr.point_disks import PointDevice
from services.replica.files import fsync_dir, move
from services.replica.vhd.device import BlockDevice

log = logging.getLogger(__name__)


class Journal:
    """Commits one VM's deltas; the caller serializes the calls (``VmStore.lock``)."""

    def __init__(
        self, layout: Layout, vm_name: str, clock: Callable[[], int], fault_apply_delay: float = 0.0
    ):
        self.layout = layout
        self.vm_name = vm_name
        self.clock = clock
        self.fault_apply_delay = fault_apply_delay
        self._retiring: threading.Thread | None = None

    def recover(self, state: VmState) -> None:
        """At start: finish a commit a crash interrupted, and drop journals already applied."""
        journal = self.layout.journal
        header_path = journal / "header.bin"
        if header_path.exists():
            header = replica_pb2.DeltaHeader.FromString(header_path.read_bytes())
            if header.sequence >= state.committed:
                log.info(
                    "re-applying committed delta after restart",
                    extra={"vm": self.vm_name, "seq": header.sequence},
                )
                if header.sequence > state.committed:
                    close_all(self._apply(state, header))
                elif not header.full:
                    # Its state was saved, but its writes to the replica may not have reached the disk.
                    close_all(self._redo(journal / "chunks.log", None))
            shutil.rmtree(journal)
        elif journal.exists():
            shutil.rmtree(journal)
        for trash in self.layout.root.glob(f"{TRASH_PREFIX}*"):
            remove_quietly(trash)

    def commit(
        self,
        state: VmState,
        header: replica_pb2.DeltaHeader,
        count: int,
        staged: list[extent_log.RecordInfo] | None = None,
        point_disks: Sequence[Mapping[str, PointDevice]] = (),
    ) -> replica_pb2.DeltaAck:
        """Capture undo data (and the old bytes into ``point_disks``), then rename staging to journal
        (the commit point), then apply.

        ``staged`` is where the records of chunks.log are, when the caller knows; else the log is scanned.
        """
        self._retire_previous()
        undo = header.additional_recovery_points > 0
        if not header.full and (undo or point_disks) and self.layout.known:
            with storage_errors(f"saving undo data for delta {header.sequence}"):
                points.capture_undo(
                    self.layout,
                    staged,
                    undo=undo,
                    point_disks=point_disks,
                    fault_delay=self.fault_apply_delay,
                )
        with storage_errors(f"committing delta {header.sequence}"):
            move(self.layout.staging, self.layout.journal)
        written = self._apply(state, header, staged)
        # The journal is durable and the state saved, so the delta is committed: the ack need not wait
        # for the replica's writeback (tens of ms) nor for deleting the journal (the filesystem discards
        # its blocks). A background thread does both; until it has, a restart redoes the journal.
        self._retiring = threading.Thread(
            target=self._retire_quietly, args=(header, written), name="journal-retire", daemon=True
        )
        self._retiring.start()
        return replica_pb2.DeltaAck(
            sequence=header.sequence,
            recovery_point_id=points.point_id(self.vm_name, header.sequence),
            chunks_applied=count,
        )

    def _retire(self, written: list[BlockDevice]) -> None:
        """Make the applied journal's disks durable (closing flushes them), then delete the journal."""
        close_all(written)
        trash = self.layout.root / f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}"
        self.layout.journal.replace(trash)
        remove_quietly(trash)

    def _retire_quietly(self, header: replica_pb2.DeltaHeader, written: list[BlockDevice]) -> None:
        """The background half of a commit. A failure leaves the journal, which the next commit (or the
        next start) retires before anything else, raising the error there if it persists."""
        try:
            self._retire(written)
        except OSError as error:
            log.warning(
                "could not retire the journal; the next commit retries",
                extra={"vm": self.vm_name, "seq": header.sequence, "error": str(error)},
            )

    def finish_previous(self) -> None:
        """Wait for the previous commit's background half (and finish it here if it failed): the
        replica disks are closed after it."""
        self._retire_previous()

    def _retire_previous(self) -> None:
        """Wait for the previous commit's background half, and finish it here if it failed."""
        if self._retiring is not None:
            self._retiring.join()
            self._retiring = None
        header_path = self.layout.journal / "header.bin"
        if header_path.exists():
            header = replica_pb2.DeltaHeader.FromString(header_path.read_bytes())
            with storage_errors("making the previous delta durable"):
                self._retire(
                    [
                        self.layout.open_replica(disk)
                        for disk in header.disk_sizes
                        if self.layout.replica(disk).exists()
                    ]
                )

    def _apply(
        self,
        state: VmState,
        header: replica_pb2.DeltaHeader,
        staged: list[extent_log.RecordInfo] | None = None,
    ) -> list[BlockDevice]:
        """Redo: idempotent, so a restart simply runs it again. The replica disks it wrote come back
        open and unflushed: the caller closes (flushes) them before the journal goes."""
        layout = self.layout
        pending: list[BlockDevice] = []
        layout.disks.mkdir(parents=True, exist_ok=True)
        if header.full:
            for disk in header.disk_sizes:
                image = layout.journal / f"{disk}.vhd"
                if image.exists():
                    # An adopted replica is a link to the disk a VM of this site runs on: replace
                    # that file, so the VM's definition still names its disk.
                    image.replace(layout.replica(disk).resolve())
            fsync_dir(layout.disks)
            # Older points were undo layers over disks that a full transfer replaced wholesale.
            state.points = []
        else:
            pending = self._redo(layout.journal / "chunks.log", staged)
        undo = points.keep_undo(layout, header.sequence)
        point_time = header.cut_time_unix_nanos or self.clock()
        state.points.append(Point(header.sequence, point_time, undo))
        state.committed = header.sequence
        state.disk_sizes = dict(header.disk_sizes)
        state.additional_points = header.additional_recovery_points
        if header.HasField("vm"):
            state.vm = header.vm.SerializeToString()
        state.primary_endpoint = header.primary_endpoint or state.primary_endpoint
        if header.HasField("settings"):
            state.settings = header.settings.SerializeToString()
        state.planned = header.planned_failover
        try:
            points.prune(layout, state, self.clock())
            layout.save(state)
            points.remove_unreferenced(layout, state)
        except BaseException:
            close_all(pending)
            raise
        return pending

    def _redo(self, log_path: Path, staged: list[extent_log.RecordInfo] | None) -> list[BlockDevice]:
        """Apply the log's records to the replica disks; they are returned open, writes not yet flushed
        (closing a device flushes it)."""
        devices: dict[str, BlockDevice] = {}
        fd = os.open(log_path, os.O_RDONLY)
        try:
            with log_path.open("rb") as file:
                for info in extent_log.scan(file) if staged is None else staged:
                    device = devices.get(info.disk) or devices.setdefault(
                        info.disk, self.layout.open_replica(info.disk)
                    )
                    if info.zero:
                        device.write_zeroes(info.offset, info.length)
                    else:
                        device.write(info.offset, extent_log.read_data(fd, info))
                    if self.fault_apply_delay:
                        time.sleep(self.fault_apply_delay)
        except BaseException:
            close_all(devices.values())
            raise
        finally:
            os.close(fd)
        return list(devices.values())
