"""Staging at the DR site: a delta arriving, checked, made durable chunk by chunk, resumable.

``begin`` validates a delta's header against the replica (sequence rules, disk names and sizes) and
opens ``staging/``, or resumes the delta already staged there when the sender resends the same cut.
``Staging.add`` stages each verified chunk: a delta's chunks are appended to ``chunks.log`` (see
``extent_log``), a full transfer writes its new disks directly. Checkpoints (in the background while
the stream goes on) make what arrived durable, so a restart resumes after it; ``finish`` hands the
whole delta to the commit (``journal``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable

from overland.v1 import replica_pb2
from services.common.errors import FieldViolation
from services.replica.dr import extent_log
from services.replica.dr.direct import DirectWriter
from services.replica.dr.layout import Layout, VmState, storage_errors
from services.replica.errors import DuplicateDelta, MalformedDelta, SequenceError, UnknownVm
from services.replica.files import write_atomic
from services.replica.settings import validate_name
from services.replica.vhd.device import BlockDevice, Buffer, check_range, write_all
from services.replica.vhd.footer import MAX_DISK_SIZE
from services.replica.vhd.image import create_fixed, open_disk

# A full transfer fsyncs its disks and records progress this often, bounding what a crash resends.
PROGRESS_EVERY_BYTES = 64 * 1024 * 1024
# A delta's log is fsynced in the background this often while it is received.
LOG_SYNC_EVERY_BYTES = 8 * 1024 * 1024

# Commits a whole staged delta: (header, chunk count, where its records sit in chunks.log or None).
Commit = Callable[[replica_pb2.DeltaHeader, int, list[extent_log.RecordInfo] | None], replica_pb2.DeltaAck]


def check_sequence(committed: int, known: bool, header: replica_pb2.DeltaHeader) -> None:
    """Reject duplicates, gaps and deltas for a VM this site has no replica of. Pure."""
    if header.sequence <= committed:
        raise DuplicateDelta(
            f"delta {header.sequence} for VM {header.vm_name!r} is already committed "
            f"(last committed sequence {committed})"
        )
    if header.sequence != committed + 1:
        raise SequenceError(
            f"delta {header.sequence} for VM {header.vm_name!r} is out of order: "
            f"the next expected sequence is {committed + 1}"
        )
    if not known and not (header.full or header.existing_copy):
        raise UnknownVm(
            f"this DR site has no replica of VM {header.vm_name!r}; start with an initial replication"
        )


def check_disks(header: replica_pb2.DeltaHeader) -> None:
    """Disk names become file names here, so they must be path-safe; sizes must be VHD sizes. Pure."""
    violations: list[FieldViolation] = []
    if not header.disk_sizes:
        violations.append(FieldViolation("header.disk_sizes", "a delta names at least one disk"))
    for disk, size in header.disk_sizes.items():
        violations += validate_name(disk, f"header.disk_sizes[{disk}]")
        if size <= 0 or size % 512 or size > MAX_DISK_SIZE:
            violations.append(
                FieldViolation(f"header.disk_sizes[{disk}]", f"size {size} is not a positive multiple of 512")
            )
    if violations:
        raise MalformedDelta(
            f"delta {header.sequence} for VM {header.vm_name!r} names bad disks: "
            + "; ".join(v.description for v in violations),
            violations,
        )


class Staging:
    """One delta being received. ``add`` stages a verified chunk; ``finish`` commits the delta."""

    def __init__(self, layout: Layout, header: replica_pb2.DeltaHeader, chunks: int, commit: Commit):
        self.layout = layout
        self.header = header
        self._commit = commit
        self.chunks = chunks
        self._since_progress = 0
        self._background: threading.Thread | None = None
        self._background_error: OSError | None = None
        self._devices: dict[str, BlockDevice] = {}
        # The new disks of a full transfer take their aligned chunks through O_DIRECT (see ``direct``).
        self._direct: dict[str, DirectWriter] = {}
        self._log_fd = -1
        # Where each staged record sits in chunks.log, so the commit applies them without re-reading
        # and re-hashing the log; None after a resume (the records staged earlier are not known here).
        self.records: list[extent_log.RecordInfo] | None = [] if chunks == 0 else None
        path = layout.staging
        if header.full:
            for disk, size in header.disk_sizes.items():
                image = path / f"{disk}.vhd"
                if not image.exists():
                    with storage_errors(f"creating disk {disk!r}"):
                        create_fixed(image, size)
                self._devices[disk] = open_disk(image, writable=True)
                with storage_errors(f"opening disk {disk!r}"):
                    writer = DirectWriter.open(image)
                if writer is not None:
                    self._direct[disk] = writer
        else:
            self._log_fd = os.open(path / "chunks.log", os.O_WRONLY | os.O_APPEND)

    def add(self, index: int, disk: str, offset: int, data: Buffer, zero: bool) -> None:
        self._raise_background_error()
        with storage_errors(f"staging chunk {index} of delta {self.header.sequence}"):
            if self.header.full:
                # A fresh disk already reads as zeros: a zero chunk of a full transfer writes nothing.
                if not zero:
                    self._write_full(disk, offset, data)
                self._progress(len(data), index + 1, PROGRESS_EVERY_BYTES)
            else:
                record = extent_log.encode_record(index, disk, offset, len(data), None if zero else data)
                position = os.lseek(self._log_fd, 0, os.SEEK_END)
                write_all(self._log_fd, position, record)
                if self.records is not None:
                    self.records.append(extent_log.locate(record, position))
                # Writing the log back while it grows leaves the commit's fsync only the tail.
                self._progress(len(record), index + 1, LOG_SYNC_EVERY_BYTES)
        self.chunks = index + 1

    def _progress(self, written: int, chunks: int, every: int) -> None:
        """Start a background checkpoint after every ``every`` bytes (one at a time)."""
        self._since_progress += written
        if self._since_progress >= every and not self._checkpointing():
            self._since_progress = 0
            self._background = threading.Thread(
                target=self._checkpoint_in_background, args=(chunks,), daemon=True
            )
            self._background.start()

    def _write_full(self, disk: str, offset: int, data: Buffer) -> None:
        device = self._devices[disk]
        check_range(offset, len(data), device.virtual_size)
        direct = self._direct.get(disk)
        if direct is not None:
            if direct.write(offset, data):
                return
            # An unaligned piece goes through the page cache, after the direct writes before it.
            direct.drain()
        device.write(offset, data)

    def _checkpointing(self) -> bool:
        return self._background is not None and self._background.is_alive()

    def _checkpoint_in_background(self, chunks: int) -> None:
        """The fsync overlaps with receiving the next chunks instead of stalling the stream."""
        try:
            self._sync_progress(chunks)
        except OSError as error:
            self._background_error = error

    def _raise_background_error(self) -> None:
        error, self._background_error = self._background_error, None
        if error is not None:
            with storage_errors("recording staging progress"):
                raise error

    def _join_background(self) -> None:
        if self._background is not None:
            self._background.join()
            self._background = None

    def checkpoint(self, chunks: int) -> None:
        """Make the first ``chunks`` chunks durable, so a restart resumes after them."""
        self._join_background()
        self._raise_background_error()
        with storage_errors("recording staging progress"):
            self._sync_progress(chunks)
        self._since_progress = 0

    def _sync_progress(self, chunks: int) -> None:
        for writer in self._direct.values():
            writer.drain()
        for device in self._devices.values():
            device.flush()
        if self.header.full:
            write_atomic(self.layout.staging / "progress", str(chunks).encode())
        else:
            os.fsync(self._log_fd)

    def close(self) -> None:
        self._join_background()
        for writer in self._direct.values():
            writer.close()
        self._direct.clear()
        for device in self._devices.values():
            device.close()
        self._devices.clear()
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1

    def finish(self, count: int) -> replica_pb2.DeltaAck:
        if count != self.chunks:
            raise MalformedDelta(
                f"delta {self.header.sequence} ends after {count} chunks but {self.chunks} were received"
            )
        self.checkpoint(count)
        self.close()
        return self._commit(self.header, count, self.records)


def begin(layout: Layout, state: VmState, header: replica_pb2.DeltaHeader, commit: Commit) -> Staging:
    """Validate the header and open staging, resuming from ``header.resume_from`` when it matches."""
    check_disks(header)
    check_sequence(state.committed, layout.known, header)
    if layout.known and not header.full:
        _check_replica_disks(state, header)
    if header.existing_copy and not layout.known:
        _check_existing_copy(layout, header)
    staged = staged_header(layout, state.committed)
    resumable = staged is not None and _same_cut(staged, header)
    chunks = staged_chunks(layout) if resumable else 0
    if header.resume_from > chunks:
        raise SequenceError(
            f"cannot resume delta {header.sequence} of VM {header.vm_name!r} "
            f"at chunk {header.resume_from}: only {chunks} chunks are staged"
        )
    if header.resume_from == 0 or not resumable:
        discard(layout)
        with storage_errors(f"staging delta {header.sequence}"):
            layout.staging.mkdir(parents=True)
            (layout.staging / "chunks.log").touch()
            write_atomic(layout.staging / "header.bin", header.SerializeToString())
    elif header.resume_from < chunks:
        _truncate(layout, header.resume_from)
    return Staging(layout, header, header.resume_from, commit)


def staged_header(layout: Layout, committed: int) -> replica_pb2.DeltaHeader | None:
    """The header of the delta in staging, if it is the next one after ``committed``."""
    path = layout.staging / "header.bin"
    if not path.exists():
        return None
    header = replica_pb2.DeltaHeader.FromString(path.read_bytes())
    return header if header.sequence == committed + 1 else None


def staged_chunks(layout: Layout) -> int:
    """Chunks of the staged delta that are whole on disk (a torn tail is cut off here)."""
    if (layout.staging / "progress").exists():
        return int((layout.staging / "progress").read_text() or 0)
    log_path = layout.staging / "chunks.log"
    if not log_path.exists():
        return 0
    count, end = 0, 0
    with log_path.open("rb") as file:
        for info in extent_log.scan(file):
            if info.index != count:
                break
            count, end = count + 1, info.end_position
    if log_path.stat().st_size != end:
        os.truncate(log_path, end)
    return count


def discard(layout: Layout) -> None:
    if layout.staging.exists():
        shutil.rmtree(layout.staging)


def _truncate(layout: Layout, chunks: int) -> None:
    """Drop staged chunks from ``chunks`` on, so the sender's resend appends in order."""
    if (layout.staging / "progress").exists():
        write_atomic(layout.staging / "progress", str(chunks).encode())
        return
    log_path = layout.staging / "chunks.log"
    with log_path.open("rb") as file:
        ends = [info.end_position for info in extent_log.scan(file)]
    os.truncate(log_path, ends[chunks - 1] if chunks else 0)


def _check_replica_disks(state: VmState, header: replica_pb2.DeltaHeader) -> None:
    if dict(header.disk_sizes) != state.disk_sizes:
        raise MalformedDelta(
            f"delta {header.sequence} names disks {dict(header.disk_sizes)} but the replica of "
            f"{header.vm_name!r} has {state.disk_sizes}"
        )


def _check_existing_copy(layout: Layout, header: replica_pb2.DeltaHeader) -> None:
    for disk, size in header.disk_sizes.items():
        path = layout.replica(disk)
        if not path.exists():
            raise UnknownVm(f"no existing copy of disk {disk!r} of VM {header.vm_name!r} at {path}")
        device = open_disk(path)
        try:
            if device.virtual_size != size:
                raise MalformedDelta(
                    f"existing copy {path} is {device.virtual_size} bytes, the primary's disk {size}"
                )
        finally:
            device.close()


def _same_cut(staged: replica_pb2.DeltaHeader, header: replica_pb2.DeltaHeader) -> bool:
    return (
        staged.sequence == header.sequence
        and staged.cut_time_unix_nanos == header.cut_time_unix_nanos
        and staged.full == header.full
    )
