"""Direct-I/O writes for the disks of a full transfer at the DR site, from a writer thread.

An initial replication writes every byte of every disk once. Through the page cache that costs the
receiving process about as much CPU as receiving the bytes (allocating, copying and later writing
back each page), on the same core that must receive the next chunk. With ``O_DIRECT`` the device
reads the data straight from an aligned buffer, and a writer thread waits for it while the stream
goes on: the receiving thread only copies each chunk once into a free buffer.

Only whole, aligned pieces go this way (``direct_span``); the caller writes anything else through
its normal file descriptor after ``drain``. ``drain`` is the ordering point: a checkpoint may claim
only what has reached the device, so it drains first. A write error comes back from the next
``write`` or ``drain``, never silently.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
import threading
from pathlib import Path

from services.replica.vhd.device import Buffer

# O_DIRECT wants the buffer, the file offset and the length aligned to the logical block size;
# the page size satisfies every device seen in practice.
ALIGN = mmap.PAGESIZE
BUFFER_BYTES = 1024 * 1024
# Buffers in flight: enough to keep the device busy while the stream delivers the next chunks.
DEPTH = 8


def direct_span(offset: int, length: int, align: int = ALIGN) -> bool:
    """Whether a write of ``length`` bytes at ``offset`` may go through ``O_DIRECT``. Pure."""
    return length > 0 and offset % align == 0 and length % align == 0


class DirectWriter:
    """Aligned writes to one file through ``O_DIRECT``, done in order by one writer thread."""

    def __init__(self, fd: int, depth: int = DEPTH, buffer_bytes: int = BUFFER_BYTES):
        self._fd = fd
        self._buffer_bytes = buffer_bytes
        # Anonymous maps are page aligned, as O_DIRECT requires.
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(depth):
            self._free.put(mmap.mmap(-1, buffer_bytes))
        self._work: queue.Queue[tuple[mmap.mmap, int, int] | None] = queue.Queue()
        self._done = threading.Condition()
        self._submitted = 0
        self._completed = 0
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="direct-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: Path) -> DirectWriter | None:
        """A writer for ``path``, or None where the filesystem refuses ``O_DIRECT`` (tmpfs, for one)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        except OSError as error:
            if error.errno == errno.EINVAL:
                return None
            raise
        return cls(fd)

    def write(self, offset: int, data: Buffer) -> bool:
        """Queue the write; False (nothing done) when it is not aligned for ``O_DIRECT``."""
        if not direct_span(offset, len(data)):
            return False
        self._raise_error()
        view = memoryview(data)
        for start in range(0, len(view), self._buffer_bytes):
            piece = view[start : start + self._buffer_bytes]
            buffer = self._free.get()
            buffer[: len(piece)] = piece
            with self._done:
                self._submitted += 1
            self._work.put((buffer, offset + start, len(piece)))
        return True

    def drain(self) -> None:
        """Wait until every write queued so far is on the device (or failed: then raise its error)."""
        with self._done:
            target = self._submitted
            self._done.wait_for(lambda: self._completed >= target or self._error is not None)
        self._raise_error()

    def close(self) -> None:
        """Stop the thread after the queued writes and close the file (errors were raised by ``drain``)."""
        self._work.put(None)
        self._thread.join()
        os.close(self._fd)

    def _raise_error(self) -> None:
        with self._done:
            error = self._error
        if error is not None:
            raise error

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            buffer, offset, length = item
            try:
                if self._error is None:
                    self._write(buffer, offset, length)
            except Exception as error:  # noqa: BLE001 (kept and raised by the next write or drain)
                with self._done:
                    self._error = error
            finally:
                self._free.put(buffer)
                with self._done:
                    self._completed += 1
                    self._done.notify_all()

    def _write(self, buffer: mmap.mmap, offset: int, length: int) -> None:
        view = memoryview(buffer)[:length]
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                if written % ALIGN:
                    raise OSError(errno.EIO, f"short direct write of {written} bytes at {offset}")
                view, offset = view[written:], offset + written
        finally:
            view.release()
