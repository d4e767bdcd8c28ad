"""The persistent change-tracking log of one disk: group-committed, crash-safe, cut per generation.

``mark`` returns only once the record naming the dirty blocks is on stable storage, and concurrent
callers share one ``fdatasync`` (group commit). ``cut`` closes the generation: the log file is renamed
to ``<log>.cut`` and a fresh one starts, so the closed generation survives a crash until ``release``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from services.replica.files import replacing
from services.replica.primary.tracking.errors import CutPending, TrackingInvalid
from services.replica.primary.tracking.extents import (
    HEADER_SLOT,
    RECORDS_START,
    BlockSet,
    LogHeader,
    Run,
    block_span,
    check_block_size,
    encode_record,
    log_limit,
    newest_header,
    replay,
)
from services.replica.vhd.device import write_all

log = logging.getLogger(__name__)

DEFAULT_TRACK_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Cut:
    """A closed generation: the blocks changed in it. ``resync`` means the changes are not known exactly
    (unclean close, log overflow), so ``runs`` covers the whole disk and the sites must compare hashes.
    """

    generation: int
    block_size: int
    disk_size: int
    runs: tuple[Run, ...]
    resync: bool

    def byte_ranges(self) -> list[tuple[int, int]]:
        """The runs as ``(offset, length)`` byte ranges, the last one clipped to the disk size."""
        ranges = []
        for first, count in self.runs:
            start = first * self.block_size
            ranges.append((start, min(count * self.block_size, self.disk_size - start)))
        return ranges

    @property
    def changed_bytes(self) -> int:
        return sum(length for _start, length in self.byte_ranges())


def cut_path(path: Path) -> Path:
    """Where a closed, not yet released generation is kept."""
    return path.with_name(path.name + ".cut")


class ChangeLog:
    """The change-tracking log of one disk. Thread-safe."""

    def __init__(self, path: Path, disk_size: int, block_size: int, fd: int, header: LogHeader):
        self.path = path
        self.disk_size = disk_size
        self.block_size = block_size
        self._fd = fd
        self._header = header
        self._blocks = -(-disk_size // block_size)
        self._current = BlockSet(self._blocks)
        self._cond = threading.Condition(threading.Lock())
        self._end = RECORDS_START
        self._sequence = 0
        self._written = 0
        self._durable = 0
        self._syncing = False
        self._pending: Cut | None = None
        self._closed = False
        self.resync_reason = ""
        # A resync was required after the outstanding cut: shipping that cut does not clear it.
        self._required_since_cut = False
        # The log was there and closed cleanly when it was opened (nothing says the disk changed).
        self.found_clean = False

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], disk_size: int, block_size: int = DEFAULT_TRACK_BLOCK
    ) -> ChangeLog:
        """Open (or create) the log of a disk of ``disk_size`` bytes.

        An unclean close, an unreadable header or a log made for another geometry marks the disk
        resync required. A closed generation left by a crash mid-cycle is merged back in.
        """
        check_block_size(block_size)
        if disk_size <= 0:
            raise TrackingInvalid(f"disk size {disk_size} must be positive")
        log_path = Path(path)
        blocks = -(-disk_size // block_size)
        reason = ""
        runs: list[Run] = []
        generation = 1
        same_geometry = True
        existed = log_path.exists()
        if existed:
            data = log_path.read_bytes()
            header = newest_header((data[:HEADER_SLOT], data[HEADER_SLOT : 2 * HEADER_SLOT]))
            if header is None:
                reason = "the tracking log header is unreadable"
            elif (header.disk_size, header.block_size) != (disk_size, block_size):
                reason = "the disk or tracking block size changed"
                generation = header.generation + 1
                same_geometry = False
            else:
                generation = header.generation
                if header.resync_required:
                    reason = "a resync was required and has not completed"
                elif not header.clean:
                    reason = "the tracking log was not closed cleanly"
                runs = replay(data, blocks=blocks).runs
        leftover = cut_path(log_path)
        had_leftover = leftover.exists()
        if had_leftover:
            if not log_path.exists():
                reason = "the tracking log was lost during a cut"
            if same_geometry:
                runs += replay(leftover.read_bytes(), blocks=blocks).runs
        fresh = LogHeader(0, generation, block_size, disk_size, clean=False, resync_required=bool(reason))
        fd = _create_log(log_path, fresh)
        tracker = cls(log_path, disk_size, block_size, fd, fresh)
        tracker.resync_reason = reason
        tracker.found_clean = existed and not reason and not had_leftover
        if reason:
            log.warning("disk marked resync required", extra={"log": str(log_path), "reason": reason})
        # Known changes stay visible even when a resync is due (the resync cut covers the disk anyway).
        with tracker._cond:
            tracker._wait_durable(tracker._append(tracker._current.add_runs(runs)))
        leftover.unlink(missing_ok=True)
        return tracker

    @property
    def generation(self) -> int:
        return self._header.generation

    @property
    def resync_required(self) -> bool:
        return self._header.resync_required

    def changed_runs(self) -> list[Run]:
        """The blocks dirtied in the open generation."""
        with self._cond:
            return self._current.runs()

    def mark(self, offset: int, length: int) -> None:
        """Record that bytes ``[offset, offset + length)`` are about to change; durable on return."""
        if offset < 0 or length < 0 or offset + length > self.disk_size:
            raise TrackingInvalid(f"range [{offset}, {offset + length}) outside the disk of {self.disk_size}")
        first, count = block_span(offset, length, self.block_size)
        with self._cond:
            target = self._append(self._current.add_run(first, count))
            if target <= self._durable:
                return
            self._wait_durable(target)

    def require_resync(self, reason: str) -> None:
        """The disk changed in a way this log did not see (``reason``): the next cut covers the whole
        disk and the sites compare hashes. Durable on return, like a ``mark``."""
        with self._cond:
            if self._closed:
                return
            self._required_since_cut = True
            self.resync_reason = reason
            if not self._header.resync_required:
                self._wait_durable(self._written)
                self._header = _next(self._header, resync_required=True)
                self._write_header()
        log.warning("disk marked resync required", extra={"log": str(self.path), "reason": reason})

    def cut(self, full: bool = False) -> Cut:
        """Close the open generation and start the next; return the closed generation's blocks.

        ``full`` (or a pending resync) makes the cut cover the whole disk. The closed generation stays
        on disk until ``release``; only one cut may be outstanding.
        """
        with self._cond:
            if self._pending is not None:
                raise CutPending(f"generation {self._pending.generation} has not been released")
            self._wait_durable(self._written)
            closed = self._current
            resync = self._header.resync_required
            if full or resync:
                closed.fill()
            cut = Cut(self.generation, self.block_size, self.disk_size, tuple(closed.runs()), resync)
            os.rename(self.path, cut_path(self.path))
            old_fd = self._fd
            self._header = LogHeader(
                0, self.generation + 1, self.block_size, self.disk_size, clean=False, resync_required=resync
            )
            self._fd = _create_log(self.path, self._header)
            os.close(old_fd)
            self._current = BlockSet(self._blocks)
            self._end = RECORDS_START
            self._written = self._durable = self._sequence = 0
            self._pending = cut
            self._required_since_cut = False
            return cut

    def release(self, cut: Cut, shipped: bool) -> None:
        """End a cut. Shipped: its blocks are replicated (and a resync cut clears resync required).
        Not shipped: its blocks return to the open generation so the next cut carries them.
        """
        with self._cond:
            if self._pending is None or self._pending.generation != cut.generation:
                raise CutPending(f"generation {cut.generation} is not the outstanding cut")
            if shipped and cut.resync and not self._required_since_cut:
                self._header = _next(self._header, resync_required=False)
                self._write_header()
                self.resync_reason = ""
            elif not shipped:
                target = self._append(self._current.add_runs(cut.runs))
                self._wait_durable(target)
            self._pending = None
        cut_path(self.path).unlink(missing_ok=True)

    def close(self) -> None:
        """Flush and mark the log cleanly closed, so the next open trusts it."""
        with self._cond:
            if self._closed:
                return
            self._wait_durable(self._written)
            self._header = _next(self._header, clean=True)
            self._write_header()
            os.close(self._fd)
            self._closed = True

    def _append(self, runs: list[Run]) -> int:
        """Append a record for ``runs`` (caller holds the lock); return the sequence to wait for."""
        if not runs or self._header.resync_required:
            return self._written
        record = encode_record(self._sequence, runs)
        write_all(self._fd, self._end, record)
        self._end += len(record)
        self._sequence += 1
        self._written = self._sequence
        if self._end > log_limit(self.disk_size):
            self._wait_durable(self._written)
            self._header = _next(self._header, resync_required=True)
            self._write_header()
            self.resync_reason = "the tracking log grew past half the disk size"
            log.warning("disk marked resync required", extra={"log": str(self.path)})
        return self._written

    def _wait_durable(self, target: int) -> None:
        """Wait (lock held) until record ``target`` is synced; the first waiter syncs for all."""
        while self._durable < target:
            if self._syncing:
                self._cond.wait()
                continue
            self._syncing = True
            batch = self._written
            fd = self._fd
            self._cond.release()
            try:
                os.fdatasync(fd)
            finally:
                self._cond.acquire()
                self._syncing = False
                self._cond.notify_all()
            self._durable = max(self._durable, batch)

    def _write_header(self) -> None:
        slot = self._header.sequence % 2
        write_all(self._fd, slot * HEADER_SLOT, self._header.encode())
        os.fdatasync(self._fd)


def _next(header: LogHeader, **changes: bool) -> LogHeader:
    return replace(header, sequence=header.sequence + 1, **changes)


def _create_log(path: Path, header: LogHeader) -> int:
    """Write a new log with ``header`` atomically and open it for appending."""
    with replacing(path, mode=0o600) as file:
        file.write(header.encode())
        file.truncate(RECORDS_START)
    return os.open(path, os.O_RDWR)
