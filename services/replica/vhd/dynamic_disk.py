"""File access to dynamic and differencing VHDs: sparse blocks through the BAT, parent fall-through.

The pure structures are in ``services.replica.vhd.dynamic``; this module adds the file offsets and the
write path. Allocation appends a block where the footer was, writes a new footer after it, and only then
points the BAT entry at it, so a crash part way leaves the old image readable.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from services.replica.vhd.check import DynamicLayout
from services.replica.vhd.device import BlockDevice, Buffer, check_range, merge_ranges, read_upto, write_all
from services.replica.vhd.dynamic import UNUSED, all_set, bit_runs, bitmap_size, set_bits
from services.replica.vhd.errors import DeviceReadOnly, Fault, VhdDamaged
from services.replica.vhd.footer import FOOTER_SIZE, SECTOR, Footer


class DynamicDisk:
    """A dynamic (``parent`` None) or differencing VHD opened for block access."""

    def __init__(
        self,
        path: Path,
        fd: int,
        footer: Footer,
        layout: DynamicLayout,
        *,
        parent: BlockDevice | None,
        writable: bool,
        owns_parent: bool = True,
    ):
        self.path = path
        self.footer = footer
        self.header = layout.header
        self.parent = parent
        # Closing the child closes its parent, unless the caller supplied one it closes itself.
        self._owns_parent = owns_parent
        self._fd = fd
        self._bat = layout.bat
        self._data_end = layout.data_end
        self._writable = writable
        self._block = layout.header.block_size
        self._bitmap_bytes = bitmap_size(self._block)
        self._bitmaps: dict[int, bytearray] = {}
        self._lock = threading.RLock()
        self._closed = False

    @property
    def virtual_size(self) -> int:
        return self.footer.current_size

    @property
    def block_size(self) -> int:
        return self._block

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self.virtual_size)
        return b"".join(self._read_piece(b, start, n) for b, start, n in self._pieces(offset, length))

    def write(self, offset: int, data: Buffer) -> None:
        self._check_writable()
        check_range(offset, len(data), self.virtual_size)
        view = memoryview(data)
        with self._lock:
            for b, start, n in self._pieces(offset, len(data)):
                self._write_piece(b, start, view[:n])
                view = view[n:]

    def write_zeroes(self, offset: int, length: int) -> None:
        self._check_writable()
        check_range(offset, length, self.virtual_size)
        with self._lock:
            for b, start, n in self._pieces(offset, length):
                # An unallocated block of a disk without parent already reads as zeros.
                if self._bat[b] != UNUSED or self.parent is not None:
                    self._write_piece(b, start, memoryview(bytes(n)))

    def flush(self) -> None:
        if self._writable:
            os.fsync(self._fd)

    def allocated_ranges(self) -> list[tuple[int, int]]:
        own = [
            (b * self._block, min(self._block, self.virtual_size - b * self._block))
            for b in range(self._blocks())
            if self._bat[b] != UNUSED
        ]
        inherited = self.parent.allocated_ranges() if self.parent is not None else []
        return merge_ranges(own + inherited)

    def own_runs(self, offset: int, length: int) -> list[tuple[bool, int, int]]:
        """``[offset, offset + length)`` split into ``(present, offset, length)`` runs: present where
        this image holds the sectors itself, not present where they come from the parent (or read as
        zeros without one). Whole sectors: the range is widened to sector boundaries."""
        check_range(offset, length, self.virtual_size)
        end = min(self.virtual_size, -(-(offset + length) // SECTOR) * SECTOR)
        position = offset // SECTOR * SECTOR
        runs: list[tuple[bool, int, int]] = []
        with self._lock:
            while position < end:
                block, start = divmod(position, self._block)
                n = min(self._block - start, end - position)
                if self._bat[block] == UNUSED:
                    pieces = [(False, position, n)]
                else:
                    bitmap = self._bitmap(block)
                    first = start // SECTOR
                    pieces = [
                        (present, block * self._block + s * SECTOR, count * SECTOR)
                        for present, s, count in bit_runs(bitmap, first, -(-n // SECTOR))
                    ]
                for present, at, whole in pieces:
                    size = min(whole, end - at)
                    if runs and runs[-1][0] == present and runs[-1][1] + runs[-1][2] == at:
                        runs[-1] = (present, runs[-1][1], runs[-1][2] + size)
                    else:
                        runs.append((present, at, size))
                position += n
        return runs

    def own_ranges(self) -> list[tuple[int, int]]:
        """Every ``(offset, length)`` this image holds itself (its sectors present), sorted, merged."""
        ranges: list[tuple[int, int]] = []
        for block in range(self._blocks()):
            with self._lock:
                allocated = self._bat[block] != UNUSED
            if allocated:
                start = block * self._block
                n = min(self._block, self.virtual_size - start)
                ranges += [(at, size) for present, at, size in self.own_runs(start, n) if present]
        return merge_ranges(ranges)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # The file is closed (and its image locks released) even when the final flush fails.
            try:
                self.flush()
            finally:
                os.close(self._fd)
                if self.parent is not None and self._owns_parent:
                    self.parent.close()

    def _blocks(self) -> int:
        return -(-self.virtual_size // self._block)

    def _pieces(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        pieces = []
        end = offset + length
        while offset < end:
            block, start = divmod(offset, self._block)
            n = min(self._block - start, end - offset)
            pieces.append((block, start, n))
            offset += n
        return pieces

    def _block_data(self, block: int) -> int:
        return self._bat[block] * SECTOR + self._bitmap_bytes

    def _bitmap(self, block: int) -> bytearray:
        cached = self._bitmaps.get(block)
        if cached is None:
            where = self._bat[block] * SECTOR
            cached = bytearray(self._read_image(where, self._bitmap_bytes, f"block {block} sector bitmap"))
            self._bitmaps[block] = cached
        return cached

    def _read_image(self, offset: int, length: int, what: str) -> bytes:
        """Bytes the validated layout says are in the file; short means the file was cut since."""
        data = read_upto(self._fd, offset, length)
        if len(data) < length:
            found = f"the file ends at {os.fstat(self._fd).st_size}"
            raise VhdDamaged(Fault(what, offset, f"{length} bytes", found), self.path)
        return data

    def _fallback(self, block: int, start: int, n: int) -> bytes:
        if self.parent is None:
            return bytes(n)
        return self.parent.read(block * self._block + start, n)

    def _read_piece(self, block: int, start: int, n: int) -> bytes:
        with self._lock:
            if self._bat[block] == UNUSED:
                return self._fallback(block, start, n)
            bitmap = self._bitmap(block)
            base = self._block_data(block)
        sectors = self._block // SECTOR
        if all_set(bitmap, sectors):
            return self._read_image(base + start, n, f"block {block} data")
        first = start // SECTOR
        last = -(-(start + n) // SECTOR)
        parts = []
        for present, run_start, run_len in bit_runs(bitmap, first, last - first):
            lo = max(start, run_start * SECTOR)
            hi = min(start + n, (run_start + run_len) * SECTOR)
            if present:
                parts.append(self._read_image(base + lo, hi - lo, f"block {block} data"))
            else:
                parts.append(self._fallback(block, lo, hi - lo))
        return b"".join(parts)

    def _write_piece(self, block: int, start: int, data: memoryview) -> None:
        if self._bat[block] == UNUSED:
            self._allocate(block)
        base = self._block_data(block)
        bitmap = self._bitmap(block)
        if all_set(bitmap, self._block // SECTOR):
            write_all(self._fd, base + start, data)
            return
        # Sectors only partly covered by the write keep their current content (possibly the parent's).
        first = start // SECTOR
        last = -(-(start + len(data)) // SECTOR)
        lo, hi = first * SECTOR, last * SECTOR
        head = self._read_piece(block, lo, start - lo) if start > lo else b""
        tail_at = start + len(data)
        tail = self._read_piece(block, tail_at, hi - tail_at) if hi > tail_at else b""
        write_all(self._fd, base + lo, b"".join((head, data, tail)))
        set_bits(bitmap, first, last - first)
        write_all(self._fd, self._bat[block] * SECTOR, bitmap)

    def _allocate(self, block: int) -> None:
        offset = self._data_end
        span = self._bitmap_bytes + self._block
        # A disk without parent reads unwritten sectors as zeros either way, so its bitmap is all ones
        # (as qemu and Hyper-V write it); a differencing disk starts empty so the parent shows through.
        bitmap = bytearray(b"\xff" * self._bitmap_bytes if self.parent is None else bytes(self._bitmap_bytes))
        os.ftruncate(self._fd, offset + span + FOOTER_SIZE)
        write_all(self._fd, offset, bitmap)
        write_all(self._fd, offset + span, self.footer.encode())
        self._bat[block] = offset // SECTOR
        write_all(self._fd, self.header.table_offset + 4 * block, (offset // SECTOR).to_bytes(4, "big"))
        self._bitmaps[block] = bitmap
        self._data_end = offset + span

    def _check_writable(self) -> None:
        if not self._writable:
            raise DeviceReadOnly(f"{self.path} is open read-only")
