"""The DR site's storage of one VM's replica: stage a delta, commit it atomically, keep recovery points.

Layout under ``<storage location>/<vm>/``:

* ``state.json`` — the single source of truth: the committed sequence, disk sizes, the VM config and
  the recovery points with their undo files. Replaced atomically (write, fsync, rename, fsync dir).
* ``disks/<disk>.vhd`` — the replica disks (fixed VHDs), always at the latest committed point.
* ``staging/`` — the delta being received: ``header.bin`` and ``chunks.log`` (self-checking records,
  see ``extent_log``), or for a full transfer the new disks themselves plus a ``progress`` counter.
* ``journal/`` — ``staging/`` renamed once the whole delta is durable. The rename is the commit:
  after it the delta is applied (redo), and a restart after a ``kill -9`` re-applies it; before it the
  replica disks were never touched, so the last committed point is intact.
* ``points/`` — undo layers (see ``recovery``) for the older recovery points.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from overland.v1 import replica_pb2
from services.common.errors import FieldViolation
from services.replica.codec.chunks import block_digests
from services.replica.dr import extent_log
from services.replica.dr.direct import DirectWriter
from services.replica.dr.recovery import PointInfo, overlay, retained
from services.replica.errors import (
    DuplicateDelta,
    MalformedDelta,
    ReplicaStateCorrupted,
    ReplicaStorageFull,
    SequenceError,
    UnknownVm,
)
from services.replica.files import fsync_dir, move, write_atomic
from services.replica.settings import validate_name
from services.replica.vhd.device import BlockDevice, Buffer, check_range, write_all
from services.replica.vhd.footer import MAX_DISK_SIZE
from services.replica.vhd.image import create_fixed, open_disk

log = logging.getLogger(__name__)

# A full transfer fsyncs its disks and records progress this often, bounding what a crash resends.
PROGRESS_EVERY_BYTES = 64 * 1024 * 1024
# A delta's log is fsynced in the background this often while it is received.
LOG_SYNC_EVERY_BYTES = 8 * 1024 * 1024
HASH_READ_BYTES = 4 * 1024 * 1024
# A committed journal is renamed to this prefix and deleted in the background.
TRASH_PREFIX = "journal-done-"


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """ENOSPC/EDQUOT become ``ReplicaStorageFull``, with what was being written."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ReplicaStorageFull(f"DR site storage is full while {what}: {error.strerror}") from None
        raise


@dataclass
class Point:
    sequence: int
    time_nanos: int
    undo: str = ""
    hourly: bool = False


@dataclass
class VmState:
    committed: int = 0
    disk_sizes: dict[str, int] = field(default_factory=dict)
    vm: bytes = b""
    additional_points: int = 0
    points: list[Point] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "committed": self.committed,
                "disk_sizes": self.disk_sizes,
                "vm": base64.b64encode(self.vm).decode(),
                "additional_points": self.additional_points,
                "points": [p.__dict__ for p in self.points],
            },
            indent=1,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> VmState:
        try:
            doc = json.loads(data)
            return cls(
                committed=int(doc["committed"]),
                disk_sizes={str(k): int(v) for k, v in doc["disk_sizes"].items()},
                vm=base64.b64decode(doc["vm"]),
                additional_points=int(doc["additional_points"]),
                points=[Point(**p) for p in doc["points"]],
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ReplicaStateCorrupted(f"replica state file is unreadable: {error}") from None


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

    def __init__(self, store: VmStore, header: replica_pb2.DeltaHeader, chunks: int):
        self.store = store
        self.header = header
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
        path = store.staging
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
            write_atomic(self.store.staging / "progress", str(chunks).encode())
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
        return self.store.commit(self.header, count, self.records)


class VmStore:
    """One VM's replica from one primary. Methods are serialized by ``lock``."""

    def __init__(
        self,
        root: Path,
        vm_name: str,
        fault_apply_delay: float = 0.0,
        clock: Callable[[], int] = time.time_ns,
    ):
        self.root = root / vm_name
        self.clock = clock
        self.vm_name = vm_name
        self.lock = threading.Lock()
        self.fault_apply_delay = fault_apply_delay
        self.staging = self.root / "staging"
        self.journal = self.root / "journal"
        self.disks = self.root / "disks"
        self.points_dir = self.root / "points"
        self._retiring: threading.Thread | None = None
        self.state = self._load()
        self._recover()

    @property
    def known(self) -> bool:
        return (self.root / "state.json").exists()

    def _load(self) -> VmState:
        path = self.root / "state.json"
        return VmState.decode(path.read_bytes()) if path.exists() else VmState()

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with storage_errors("saving replica state"):
            write_atomic(self.root / "state.json", self.state.encode())

    def _recover(self) -> None:
        """Finish a commit a crash interrupted, and drop files no state references."""
        header_path = self.journal / "header.bin"
        if header_path.exists():
            header = replica_pb2.DeltaHeader.FromString(header_path.read_bytes())
            if header.sequence >= self.state.committed:
                log.info(
                    "re-applying committed delta after restart",
                    extra={"vm": self.vm_name, "seq": header.sequence},
                )
                if header.sequence > self.state.committed:
                    _close_all(self._apply_journal(header))
                elif not header.full:
                    # Its state was saved, but its writes to the replica may not have reached the disk.
                    _close_all(self._redo(self.journal / "chunks.log", None))
            shutil.rmtree(self.journal)
        elif self.journal.exists():
            shutil.rmtree(self.journal)
        for trash in self.root.glob(f"{TRASH_PREFIX}*"):
            _remove_quietly(trash)
        if self.points_dir.exists():
            referenced = {p.undo for p in self.state.points}
            for path in self.points_dir.iterdir():
                if path.name not in referenced:
                    path.unlink()

    def receiver_state(self) -> replica_pb2.ReceiverState:
        staged = self.staged_header()
        return replica_pb2.ReceiverState(
            vm_name=self.vm_name,
            committed_sequence=self.state.committed,
            staged_sequence=staged.sequence if staged else 0,
            staged_chunks=self.staged_chunks() if staged else 0,
        )

    def staged_header(self) -> replica_pb2.DeltaHeader | None:
        path = self.staging / "header.bin"
        if not path.exists():
            return None
        header = replica_pb2.DeltaHeader.FromString(path.read_bytes())
        return header if header.sequence == self.state.committed + 1 else None

    def staged_chunks(self) -> int:
        """Chunks of the staged delta that are whole on disk (a torn tail is cut off here)."""
        if (self.staging / "progress").exists():
            return int((self.staging / "progress").read_text() or 0)
        log_path = self.staging / "chunks.log"
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

    def begin(self, header: replica_pb2.DeltaHeader) -> Staging:
        """Validate the header and open staging, resuming from ``header.resume_from`` when it matches."""
        check_disks(header)
        check_sequence(self.state.committed, self.known, header)
        if self.known and not header.full:
            self._check_disks(header)
        if header.existing_copy and not self.known:
            self._check_existing_copy(header)
        staged = self.staged_header()
        resumable = staged is not None and _same_cut(staged, header)
        chunks = self.staged_chunks() if resumable else 0
        if header.resume_from > chunks:
            raise SequenceError(
                f"cannot resume delta {header.sequence} of VM {self.vm_name!r} "
                f"at chunk {header.resume_from}: only {chunks} chunks are staged"
            )
        if header.resume_from == 0 or not resumable:
            self.discard_staging()
            with storage_errors(f"staging delta {header.sequence}"):
                self.staging.mkdir(parents=True)
                (self.staging / "chunks.log").touch()
                write_atomic(self.staging / "header.bin", header.SerializeToString())
        elif header.resume_from < chunks:
            self._truncate_staging(header.resume_from)
        return Staging(self, header, header.resume_from)

    def _truncate_staging(self, chunks: int) -> None:
        """Drop staged chunks from ``chunks`` on, so the sender's resend appends in order."""
        if (self.staging / "progress").exists():
            write_atomic(self.staging / "progress", str(chunks).encode())
            return
        log_path = self.staging / "chunks.log"
        with log_path.open("rb") as file:
            ends = [info.end_position for info in extent_log.scan(file)]
        os.truncate(log_path, ends[chunks - 1] if chunks else 0)

    def _check_disks(self, header: replica_pb2.DeltaHeader) -> None:
        if dict(header.disk_sizes) != self.state.disk_sizes:
            raise MalformedDelta(
                f"delta {header.sequence} names disks {dict(header.disk_sizes)} but the replica of "
                f"{self.vm_name!r} has {self.state.disk_sizes}"
            )

    def _check_existing_copy(self, header: replica_pb2.DeltaHeader) -> None:
        for disk, size in header.disk_sizes.items():
            path = self._replica(disk)
            if not path.exists():
                raise UnknownVm(f"no existing copy of disk {disk!r} of VM {self.vm_name!r} at {path}")
            device = open_disk(path)
            try:
                if device.virtual_size != size:
                    raise MalformedDelta(
                        f"existing copy {path} is {device.virtual_size} bytes, the primary's disk {size}"
                    )
            finally:
                device.close()

    def discard_staging(self) -> None:
        if self.staging.exists():
            shutil.rmtree(self.staging)

    def commit(
        self, header: replica_pb2.DeltaHeader, count: int, staged: list[extent_log.RecordInfo] | None = None
    ) -> replica_pb2.DeltaAck:
        """Capture undo data, then rename staging to journal (the commit point), then apply.

        ``staged`` is where the records of chunks.log are, when the caller knows; else the log is scanned.
        """
        self._retire_previous()
        if not header.full and header.additional_recovery_points > 0 and self.known:
            with storage_errors(f"saving undo data for delta {header.sequence}"):
                self._capture_undo(staged)
        with storage_errors(f"committing delta {header.sequence}"):
            move(self.staging, self.journal)
        written = self._apply_journal(header, staged)
        # The journal is durable and the state saved, so the delta is committed: the ack need not wait
        # for the replica's writeback (tens of ms) nor for deleting the journal (the filesystem discards
        # its blocks). A background thread does both; until it has, a restart redoes the journal.
        self._retiring = threading.Thread(
            target=self._retire_quietly, args=(header, written), name="journal-retire", daemon=True
        )
        self._retiring.start()
        return replica_pb2.DeltaAck(
            sequence=header.sequence,
            recovery_point_id=point_id(self.vm_name, header.sequence),
            chunks_applied=count,
        )

    def _retire_journal(self, written: list[BlockDevice]) -> None:
        """Make the applied journal's disks durable (closing flushes them), then delete the journal."""
        _close_all(written)
        trash = self.root / f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}"
        self.journal.replace(trash)
        _remove_quietly(trash)

    def _retire_quietly(self, header: replica_pb2.DeltaHeader, written: list[BlockDevice]) -> None:
        """The background half of a commit. A failure leaves the journal, which the next commit (or the
        next start) retires before anything else, raising the error there if it persists."""
        try:
            self._retire_journal(written)
        except OSError as error:
            log.warning(
                "could not retire the journal; the next commit retries",
                extra={"vm": self.vm_name, "seq": header.sequence, "error": str(error)},
            )

    def _retire_previous(self) -> None:
        """Wait for the previous commit's background half, and finish it here if it failed."""
        if self._retiring is not None:
            self._retiring.join()
            self._retiring = None
        header_path = self.journal / "header.bin"
        if header_path.exists():
            header = replica_pb2.DeltaHeader.FromString(header_path.read_bytes())
            with storage_errors("making the previous delta durable"):
                self._retire_journal(
                    [self._open_replica(disk) for disk in header.disk_sizes if self._replica(disk).exists()]
                )

    def _capture_undo(self, staged: list[extent_log.RecordInfo] | None) -> None:
        """Write the bytes the staged delta will overwrite to ``staging/undo.log`` (before the commit)."""
        devices: dict[str, BlockDevice] = {}
        log_fd = os.open(self.staging / "undo.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with (self.staging / "chunks.log").open("rb") as file:
                for info in extent_log.scan(file) if staged is None else staged:
                    device = devices.get(info.disk) or devices.setdefault(
                        info.disk, self._open_replica(info.disk)
                    )
                    old = device.read(info.offset, info.length)
                    os.write(
                        log_fd, extent_log.encode_record(info.index, info.disk, info.offset, info.length, old)
                    )
            os.fsync(log_fd)
        finally:
            os.close(log_fd)
            for device in devices.values():
                device.close()

    def _replica(self, disk: str) -> Path:
        return self.disks / f"{disk}.vhd"

    def _open_replica(self, disk: str) -> BlockDevice:
        return open_disk(self._replica(disk), writable=True)

    def _apply_journal(
        self,
        header: replica_pb2.DeltaHeader,
        staged: list[extent_log.RecordInfo] | None = None,
    ) -> list[BlockDevice]:
        """Redo: idempotent, so a restart simply runs it again. The replica disks it wrote come back
        open and unflushed: the caller closes (flushes) them before the journal goes."""
        pending: list[BlockDevice] = []
        self.disks.mkdir(parents=True, exist_ok=True)
        if header.full:
            for disk in header.disk_sizes:
                image = self.journal / f"{disk}.vhd"
                if image.exists():
                    image.replace(self._replica(disk))
            fsync_dir(self.disks)
            # Older points were undo layers over disks that a full transfer replaced wholesale.
            self.state.points = []
        else:
            pending = self._redo(self.journal / "chunks.log", staged)
        undo = ""
        undo_path = self.journal / "undo.log"
        if undo_path.exists():
            self.points_dir.mkdir(parents=True, exist_ok=True)
            undo = f"{header.sequence}-{uuid.uuid4().hex[:8]}.undo"
            move(undo_path, self.points_dir / undo)
        point_time = header.cut_time_unix_nanos or self.clock()
        self.state.points.append(Point(header.sequence, point_time, undo))
        self.state.committed = header.sequence
        self.state.disk_sizes = dict(header.disk_sizes)
        self.state.additional_points = header.additional_recovery_points
        if header.HasField("vm"):
            self.state.vm = header.vm.SerializeToString()
        try:
            self._prune(self.clock())
            self._save()
            self._remove_unreferenced()
        except BaseException:
            _close_all(pending)
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
                        info.disk, self._open_replica(info.disk)
                    )
                    if info.zero:
                        device.write_zeroes(info.offset, info.length)
                    else:
                        device.write(info.offset, extent_log.read_data(fd, info))
                    if self.fault_apply_delay:
                        time.sleep(self.fault_apply_delay)
        except BaseException:
            _close_all(devices.values())
            raise
        finally:
            os.close(fd)
        return list(devices.values())

    def _prune(self, now_nanos: int) -> None:
        """Drop points retention no longer keeps, merging each dropped undo layer into the next newer one."""
        infos = [PointInfo(p.sequence, p.time_nanos) for p in self.state.points]
        kept, hourly = retained(infos, now_nanos, self.state.additional_points)
        points = sorted(self.state.points, key=lambda p: p.sequence)
        for i in range(len(points) - 1, -1, -1):
            point = points[i]
            if point.sequence in kept:
                continue
            newer = next((p for p in points[i + 1 :] if p.sequence in kept), None)
            if newer is not None and point.undo and newer.undo:
                newer.undo = self._merge_undo(newer.undo, point.undo, newer.sequence)
        survivors = [p for p in points if p.sequence in kept]
        for point in survivors:
            point.hourly = point.sequence in hourly
        if survivors:
            # The oldest point's undo would restore a point nobody keeps.
            survivors[0].undo = ""
        self.state.points = survivors

    def _merge_undo(self, newer: str, older: str, sequence: int) -> str:
        """A layer equal to applying ``newer`` then ``older`` (older wins where both cover a byte)."""
        sources = [self.points_dir / newer, self.points_dir / older]
        indexes = [_index(path) for path in sources]
        name = f"{sequence}-{uuid.uuid4().hex[:8]}.undo"
        fds = [os.open(path, os.O_RDONLY) for path in sources]
        out = os.open(self.points_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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

    def _remove_unreferenced(self) -> None:
        if not self.points_dir.exists():
            return
        referenced = {p.undo for p in self.state.points}
        for path in self.points_dir.iterdir():
            if path.name not in referenced:
                path.unlink()

    def recovery_points(self) -> list[replica_pb2.RecoveryPoint]:
        return [
            replica_pb2.RecoveryPoint(
                id=point_id(self.vm_name, p.sequence),
                vm_name=self.vm_name,
                sequence=p.sequence,
                create_time_unix_nanos=p.time_nanos,
                hourly=p.hourly,
            )
            for p in sorted(self.state.points, key=lambda p: p.sequence, reverse=True)
        ]

    def block_hashes(self, disk: str, block_size: int) -> Iterator[replica_pb2.BlockHashes]:
        path = self._replica(disk)
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

    def materialize(self, sequence: int, out_dir: Path) -> dict[str, Path]:
        """Copies of the disks as they were at recovery point ``sequence`` (for failover and tests)."""
        points = sorted(self.state.points, key=lambda p: p.sequence, reverse=True)
        if sequence not in {p.sequence for p in points}:
            raise UnknownVm(f"VM {self.vm_name!r} has no recovery point {sequence}")
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, Path] = {}
        for disk in self.state.disk_sizes:
            target = out_dir / f"{disk}.vhd"
            subprocess.run(
                ["cp", "--sparse=always", str(self._replica(disk)), str(target)],
                check=True,
                timeout=600,
            )
            outputs[disk] = target
        for point in points:
            if point.sequence <= sequence:
                break
            self._apply_undo(self.points_dir / point.undo, outputs)
        return outputs

    def _apply_undo(self, path: Path, outputs: dict[str, Path]) -> None:
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


def _remove_quietly(path: Path) -> None:
    """Best effort: a leftover only takes space until the next start removes it."""
    try:
        shutil.rmtree(path)
    except OSError as error:
        log.warning("could not remove a finished journal", extra={"path": str(path), "error": str(error)})


def _index(path: Path) -> list[extent_log.RecordInfo]:
    with path.open("rb") as file:
        return list(extent_log.scan(file))


def _same_cut(staged: replica_pb2.DeltaHeader, header: replica_pb2.DeltaHeader) -> bool:
    return (
        staged.sequence == header.sequence
        and staged.cut_time_unix_nanos == header.cut_time_unix_nanos
        and staged.full == header.full
    )


def point_id(vm_name: str, sequence: int) -> str:
    return f"{vm_name}@{sequence}"


def _close_all(devices: Iterable[BlockDevice]) -> None:
    """Close (and so flush) every device, raising the first error after trying them all."""
    errors: list[OSError] = []
    for device in devices:
        try:
            device.close()
        except OSError as error:
            errors.append(error)
    if errors:
        raise errors[0]
