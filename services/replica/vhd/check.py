"""Checking an image before use: the format the user named, and every VHD structure against the file.

Pure over a ``read(offset, length) -> bytes`` function and the file's size (``image`` passes ``pread``
on the open file; the fuzz tests pass bytes). Nothing is read before its range is known to lie inside
the file, and nothing is allocated in proportion to a size field before that field is checked against
the file and the format's limits, so a hostile image costs at most the disk's own BAT in memory.
Every refusal is a ``VhdCorrupt`` whose ``Fault`` names the field, its byte offset, what the format
expects and what the file holds.

What is checked (the rules are listed in docs/replica-storage.md):
- footer: cookie, checksum, version, disk type, current size (a multiple of 512 up to 2040 GiB) and
  data offset; a fixed disk's file is exactly its current size plus the footer;
- dynamic header: inside the file, cookie, checksum, version, table offset, block size (a power of
  two, 4 KiB to 256 MiB), max table entries (enough for the disk, not more than its BAT sectors hold);
- BAT: inside the data area; every allocated block (its sector bitmap and data) inside the data area,
  clear of the footer copy, header, BAT, parent locators and every other block; entries past the
  disk's end unused;
- parent locators of a differencing disk: their data inside the data area, at most 64 KiB.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from services.replica.vhd.dynamic import (
    HEADER_SIZE,
    LOCATOR_SIZE,
    LOCATOR_TABLE_OFFSET,
    NO_PLATFORM,
    UNUSED,
    DynamicHeader,
    bat_bytes,
    bitmap_size,
    decode_bat,
    decode_header,
    sector_align,
)
from services.replica.vhd.errors import Fault, VhdCorrupt
from services.replica.vhd.footer import FOOTER_COOKIE, FOOTER_SIZE, SECTOR, DiskType, Footer, decode_footer

Read = Callable[[int, int], bytes]
MAX_LOCATOR_BYTES = 64 * 1024
VHDX_SIGNATURE = b"vhdxfile"
# A BAT entry per 4 bytes: the entries one sector of BAT holds (the table is padded to whole sectors).
ENTRIES_PER_SECTOR = SECTOR // 4
RAW_HINT = "a raw image needs --format raw"
# 4 Mi blocks: every disk up to 2040 GiB in blocks of 512 KiB or more, and a BAT of at most 16 MiB.
MAX_BAT_ENTRIES = 4 * 1024 * 1024


class DiskFormat(StrEnum):
    """How a disk file is read: never guessed, named by the user (the API's ``VmDisk.format``)."""

    # A fixed, dynamic or differencing VHD: anything else is refused. A VHDX (by its signature) is
    # read as VHDX where read-only access applies, and refused for writing.
    VHD = "vhd"
    # A VHDX, read-only.
    VHDX = "vhdx"
    # The file's bytes are the disk's bytes, whatever they hold.
    RAW = "raw"


@dataclass(frozen=True)
class DynamicLayout:
    """The validated structures of a dynamic image: header, BAT and where block data may grow."""

    header: DynamicHeader
    bat: list[int]
    data_end: int


def is_vhdx(read: Read, file_size: int) -> bool:
    """Whether the file starts with the VHDX signature."""
    return file_size >= len(VHDX_SIGNATURE) and read(0, len(VHDX_SIGNATURE)) == VHDX_SIGNATURE


def find_footer(read: Read, file_size: int) -> Footer:
    """The image's validated footer: the one at the end, or a dynamic disk's copy at offset 0 when the
    end's is torn or was cut off (the spec keeps the copy for that). ``VhdCorrupt`` otherwise, saying
    why the file is not a VHD."""
    end = file_size - FOOTER_SIZE
    if end < 0:
        raise VhdCorrupt(
            Fault(
                "footer", 0, f"a {FOOTER_SIZE}-byte VHD footer ({RAW_HINT})", f"a file of {file_size} bytes"
            )
        )
    tail = read(end, FOOTER_SIZE)
    head = read(0, FOOTER_SIZE)
    if tail.startswith(FOOTER_COOKIE):
        try:
            return decode_footer(tail, end)
        except VhdCorrupt:
            copy = _dynamic_copy(head)
            if copy is None:
                raise
            return copy
    copy = _dynamic_copy(head)
    if copy is None:
        if head.startswith(FOOTER_COOKIE):
            decode_footer(head, 0)  # a damaged copy: say what is wrong with it
        raise VhdCorrupt(
            Fault("footer cookie", end, f"{FOOTER_COOKIE!r}, a VHD's footer ({RAW_HINT})", repr(tail[:8]))
        )
    return copy


def _dynamic_copy(head: bytes) -> Footer | None:
    """The footer copy at offset 0 if it is a valid dynamic or differencing footer (fixed disks have none)."""
    if not head.startswith(FOOTER_COOKIE):
        return None
    try:
        footer = decode_footer(head, 0)
    except VhdCorrupt:
        return None
    return None if footer.disk_type is DiskType.FIXED else footer


def check_fixed(footer: Footer, file_size: int) -> None:
    """A fixed disk is its data followed by the footer: the file is exactly current size + 512 bytes."""
    data = file_size - FOOTER_SIZE
    if data != footer.current_size:
        state = "the file is truncated" if data < footer.current_size else "bytes the footer does not count"
        raise VhdCorrupt(
            Fault(
                "fixed disk data",
                0,
                f"{footer.current_size} bytes (the footer's current size) before the footer",
                f"{data} bytes: {state}",
            )
        )


@dataclass(frozen=True)
class _Extent:
    """A metadata structure's bytes, and the field that places it (for the error)."""

    start: int
    length: int
    what: str
    field: str
    field_offset: int


def load_layout(read: Read, footer: Footer, file_size: int) -> DynamicLayout:
    """Read and validate the dynamic header, BAT and parent locators of a dynamic or differencing disk."""
    at = footer.data_offset
    if at + HEADER_SIZE > file_size:
        raise VhdCorrupt(
            Fault(
                "dynamic header", at, f"{HEADER_SIZE} bytes inside the file", f"the file ends at {file_size}"
            )
        )
    header = decode_header(read(at, HEADER_SIZE), at)
    needed = _check_entries(footer, header, at)
    # The data area ends at the footer; a dynamic disk whose footer was torn or cut ends at the file's end.
    tail_is_footer = read(file_size - FOOTER_SIZE, len(FOOTER_COOKIE)) == FOOTER_COOKIE
    data_end = file_size - FOOTER_SIZE if tail_is_footer else file_size
    table = header.table_offset
    table_span = bat_bytes(header.max_table_entries)
    if table + table_span > data_end:
        raise VhdCorrupt(
            Fault(
                "BAT",
                table,
                f"{table_span} bytes ({header.max_table_entries} entries) ending by the data end, {data_end}",
                f"a table running to byte {table + table_span}",
            )
        )
    bat = decode_bat(read(table, table_span), header.max_table_entries)
    metadata = [
        _Extent(0, FOOTER_SIZE, "footer copy", "footer data offset", 0),
        _Extent(at, HEADER_SIZE, "dynamic header", "footer data offset", 16),
        _Extent(table, table_span, "BAT", "dynamic header table offset", at + 16),
    ]
    if footer.disk_type is DiskType.DIFFERENCING:
        metadata += _locator_extents(header, at, data_end)
    _check_disjoint(metadata)
    _check_blocks(
        bat,
        needed,
        bitmap_size(header.block_size) + header.block_size,
        table,
        data_end=data_end,
        metadata=metadata,
    )
    return DynamicLayout(header, bat, sector_align(data_end))


def _check_entries(footer: Footer, header: DynamicHeader, at: int) -> int:
    """The number of blocks the disk has, once the header's table size is known to fit it."""
    needed = -(-footer.current_size // header.block_size)
    if needed > MAX_BAT_ENTRIES:
        raise VhdCorrupt(
            Fault(
                "dynamic header block size",
                at + 32,
                f"at most {MAX_BAT_ENTRIES} blocks for a disk of {footer.current_size} bytes",
                f"{header.block_size} ({needed} blocks)",
            )
        )
    most = -(-needed // ENTRIES_PER_SECTOR) * ENTRIES_PER_SECTOR
    if not needed <= header.max_table_entries <= most:
        raise VhdCorrupt(
            Fault(
                "dynamic header max table entries",
                at + 28,
                f"{needed} to {most} (a disk of {footer.current_size} bytes, blocks of {header.block_size})",
                str(header.max_table_entries),
            )
        )
    return needed


def _locator_extents(header: DynamicHeader, at: int, data_end: int) -> list[_Extent]:
    extents = []
    for index, locator in enumerate(header.locators):
        if locator.platform == NO_PLATFORM or not locator.data_length:
            continue
        field = f"parent locator {index} data"
        where = at + LOCATOR_TABLE_OFFSET + index * LOCATOR_SIZE
        end = locator.data_offset + locator.data_length
        if locator.data_length > MAX_LOCATOR_BYTES or end > data_end:
            raise VhdCorrupt(
                Fault(
                    field,
                    where,
                    f"at most {MAX_LOCATOR_BYTES} bytes ending by the data end at {data_end}",
                    f"{locator.data_length} bytes at byte {locator.data_offset}",
                )
            )
        extents.append(
            _Extent(
                locator.data_offset, sector_align(locator.data_length), field, f"{field} offset", where + 16
            )
        )
    return extents


def _check_disjoint(extents: list[_Extent]) -> None:
    ordered = sorted(extents, key=lambda e: (e.start, e.length))
    for before, after in itertools.pairwise(ordered):
        if after.start < before.start + before.length:
            raise VhdCorrupt(
                Fault(
                    after.field,
                    after.field_offset,
                    f"the {after.what} clear of the {before.what} at bytes "
                    f"[{before.start}, {before.start + before.length})",
                    f"the {after.what} at byte {after.start}",
                )
            )


def _check_blocks(
    bat: list[int], needed: int, span: int, table: int, *, data_end: int, metadata: list[_Extent]
) -> None:
    """Every allocated block (bitmap and data, ``span`` bytes) inside the data area, clear of the
    metadata and of each other; entries past the disk's last block unused. Memory: one int per block."""

    def fault(block: int, expected: str, found: str) -> VhdCorrupt:
        return VhdCorrupt(Fault(f"BAT entry {block}", table + 4 * block, expected, found))

    starts = []
    for block, entry in enumerate(bat):
        if entry == UNUSED:
            continue
        if block >= needed:
            raise fault(block, "unused (0xFFFFFFFF): past the end of the disk", f"sector {entry}")
        if entry * SECTOR + span > data_end:
            raise fault(
                block,
                f"a block of {span} bytes (bitmap and data) ending by the data end at {data_end}",
                f"sector {entry}: a block running to byte {entry * SECTOR + span}",
            )
        starts.append(entry)
    starts.sort()
    for extent in metadata:
        # The blocks that overlap [start, end) are those starting after start - span and before end.
        low = bisect.bisect_left(starts, -(-(extent.start - span + 1) // SECTOR))
        if low < len(starts) and starts[low] * SECTOR < extent.start + extent.length:
            entry = starts[low]
            raise fault(
                bat.index(entry),
                f"a block clear of the {extent.what}, bytes [{extent.start}, {extent.start + extent.length})",
                f"sector {entry} (byte {entry * SECTOR})",
            )
    for first, second in itertools.pairwise(starts):
        if (second - first) * SECTOR < span:
            earlier = bat.index(first)
            later = bat.index(second, earlier + 1) if second == first else bat.index(second)
            raise fault(
                later,
                f"a block clear of block {earlier} at bytes [{first * SECTOR}, {first * SECTOR + span})",
                f"sector {second} (byte {second * SECTOR})",
            )
