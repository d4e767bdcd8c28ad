"""The ``BlockDevice`` interface every replica disk offers, and its plain-file implementation.

Raw images and fixed VHDs are both a flat run of bytes in a file (a fixed VHD just has a footer after
it), so one ``FileDevice`` serves both. Dynamic and differencing VHDs live in ``services.replica.vhd.image``.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from services.replica.vhd.errors import DeviceReadOnly, VhdInvalid

DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024
Buffer = bytes | bytearray | memoryview
_ZERO_CHUNK = 1024 * 1024
# FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE from <linux/falloc.h>: free the blocks, keep the file size.
_FALLOC_PUNCH_HOLE_KEEP_SIZE = 0x02 | 0x01


@runtime_checkable
class BlockDevice(Protocol):
    """A virtual disk: random access to ``virtual_size`` bytes. Safe to call from several threads."""

    @property
    def virtual_size(self) -> int: ...

    @property
    def block_size(self) -> int:
        """The allocation unit (a VHD block; 2 MiB for raw and fixed disks)."""
        ...

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: Buffer) -> None: ...

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make the range read as zeros (cheaper than ``write`` of zeros where the format allows)."""
        ...

    def flush(self) -> None:
        """Make every completed write durable."""
        ...

    def allocated_ranges(self) -> list[tuple[int, int]]:
        """Sorted, disjoint ``(offset, length)`` ranges that may hold data; everything else reads as zeros."""
        ...

    def close(self) -> None: ...


def check_range(offset: int, length: int, size: int) -> None:
    """Raise ``VhdInvalid`` unless ``[offset, offset + length)`` lies within a disk of ``size`` bytes."""
    if offset < 0 or length < 0 or offset + length > size:
        raise VhdInvalid(f"range [{offset}, {offset + length}) is outside the disk of {size} bytes")


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort ``(offset, length)`` ranges and merge those that touch or overlap; drop empty ones."""
    merged: list[tuple[int, int]] = []
    for start, length in sorted(r for r in ranges if r[1] > 0):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_length = merged[-1]
            merged[-1] = (last_start, max(last_length, start + length - last_start))
        else:
            merged.append((start, length))
    return merged


def read_upto(fd: int, offset: int, length: int) -> bytes:
    """``pread`` that loops over short reads and stops at the end of the file (the result may be short)."""
    parts = []
    done = 0
    while done < length:
        chunk = os.pread(fd, length - done, offset + done)
        if not chunk:
            break
        parts.append(chunk)
        done += len(chunk)
    return b"".join(parts)


def read_exact(fd: int, offset: int, length: int) -> bytes:
    """``pread`` that loops over short reads; bytes past the end of the file read as zeros."""
    return read_upto(fd, offset, length).ljust(length, b"\0")


def write_all(fd: int, offset: int, data: Buffer) -> None:
    """``pwrite`` that loops over short writes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a byte range so it reads as zeros; False where the filesystem cannot (write zeros then)."""
    fallocate = _libc().fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if fallocate(fd, _FALLOC_PUNCH_HOLE_KEEP_SIZE, offset, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code))


def data_ranges(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` ranges of ``[start, end)`` that are not holes (SEEK_DATA/SEEK_HOLE)."""
    ranges = []
    position = start
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:
                break
            raise
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        ranges.append((data, hole - data))
        position = hole
    return ranges


class FileDevice:
    """``size`` bytes at the start of a file: a raw image, or a fixed VHD (whose footer follows the data)."""

    def __init__(
        self,
        path: Path,
        size: int,
        writable: bool,
        block_size: int = DEFAULT_BLOCK_SIZE,
        *,
        fd: int | None = None,
    ):
        """Serve ``path`` (or ``fd``, an open of it the device then owns: ``open_disk`` locks and checks
        the file before handing it over)."""
        self.path = path
        self._size = size
        self._block_size = block_size
        self._writable = writable
        self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY) if fd is None else fd
        self._closed = threading.Event()

    @property
    def virtual_size(self) -> int:
        return self._size

    @property
    def block_size(self) -> int:
        return self._block_size

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self._size)
        return read_exact(self._fd, offset, length)

    def write(self, offset: int, data: Buffer) -> None:
        self._check_writable()
        check_range(offset, len(data), self._size)
        write_all(self._fd, offset, data)

    def write_zeroes(self, offset: int, length: int) -> None:
        self._check_writable()
        check_range(offset, length, self._size)
        if length and punch_hole(self._fd, offset, length):
            return
        end = offset + length
        while offset < end:
            step = min(_ZERO_CHUNK, end - offset)
            write_all(self._fd, offset, bytes(step))
            offset += step

    def flush(self) -> None:
        if self._writable:
            os.fsync(self._fd)

    def allocated_ranges(self) -> list[tuple[int, int]]:
        return data_ranges(self._fd, 0, self._size)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            # The file is closed (and its image locks released) even when the final flush fails.
            try:
                self.flush()
            finally:
                os.close(self._fd)

    def _check_writable(self) -> None:
        if not self._writable:
            raise DeviceReadOnly(f"{self.path} is open read-only")
