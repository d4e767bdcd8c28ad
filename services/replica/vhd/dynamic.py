"""The dynamic disk header, parent locators, block allocation table and sector bitmaps: pure codecs.

Layout of a dynamic or differencing VHD (Microsoft VHD Image Format Specification):
footer copy (512) | dynamic header (1024) | BAT (4 bytes per block, padded to a sector) |
parent locator data | blocks (sector bitmap padded to a sector, then the block's data) | footer (512).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from services.replica.vhd.errors import Fault, VhdCorrupt, VhdInvalid
from services.replica.vhd.footer import SECTOR, check_structure, ones_complement_checksum

HEADER_SIZE = 1024
HEADER_COOKIE = b"cxsparse"
HEADER_VERSION = 0x00010000
UNUSED = 0xFFFFFFFF
DEFAULT_VHD_BLOCK = 2 * 1024 * 1024
MIN_BLOCK = SECTOR * 8
MAX_BLOCK = 256 * 1024 * 1024
LOCATOR_COUNT = 8
# Where the locator table starts in the dynamic header, and the size of one entry.
LOCATOR_TABLE_OFFSET = 576
# Windows paths (absolute "W2ku", relative "W2ru") are UTF-16LE; "MacX" is a UTF-8 file URL.
PLATFORM_ABSOLUTE = b"W2ku"
PLATFORM_RELATIVE = b"W2ru"
PLATFORM_MACX = b"MacX"
NO_PLATFORM = b"\0\0\0\0"

_HEADER = struct.Struct(">8sQQIIII16sII512s192s256x")
_LOCATOR = struct.Struct(">4sIIIQ")
LOCATOR_SIZE = _LOCATOR.size
_CHECKSUM_OFFSET = 36


@dataclass(frozen=True)
class ParentLocator:
    """Where to find the parent: a platform code and the byte range of its platform data in the file."""

    platform: bytes
    data_offset: int
    data_length: int
    data_space: int

    def encode(self) -> bytes:
        return _LOCATOR.pack(self.platform, self.data_space, self.data_length, 0, self.data_offset)


EMPTY_LOCATOR = ParentLocator(NO_PLATFORM, 0, 0, 0)


@dataclass(frozen=True)
class DynamicHeader:
    """A decoded dynamic disk header. Differencing disks fill in the parent fields."""

    table_offset: int
    max_table_entries: int
    block_size: int = DEFAULT_VHD_BLOCK
    parent_unique_id: bytes = bytes(16)
    parent_timestamp: int = 0
    parent_name: str = ""
    locators: tuple[ParentLocator, ...] = field(default=(EMPTY_LOCATOR,) * LOCATOR_COUNT)
    data_offset: int = 0xFFFFFFFFFFFFFFFF
    version: int = HEADER_VERSION

    def encode(self) -> bytes:
        raw = self._pack(0)
        return self._pack(ones_complement_checksum(raw))

    def _pack(self, checksum: int) -> bytes:
        name = self.parent_name.encode("utf-16-be")
        if len(name) > 512:
            raise VhdInvalid("parent name is longer than 256 UTF-16 code units")
        locators = b"".join(loc.encode() for loc in self.locators)
        return _HEADER.pack(
            HEADER_COOKIE,
            self.data_offset,
            self.table_offset,
            self.version,
            self.max_table_entries,
            self.block_size,
            checksum,
            self.parent_unique_id,
            self.parent_timestamp,
            0,
            name,
            locators,
        )


def decode_header(data: bytes, at: int = 0) -> DynamicHeader:
    """Decode and validate the dynamic header found at byte ``at`` of the file; a malformed field
    raises ``VhdCorrupt`` naming it and its offset."""
    if len(data) != HEADER_SIZE:
        raise VhdCorrupt(
            Fault("dynamic header", at, f"{HEADER_SIZE} bytes", f"{len(data)} before the end of file")
        )
    check_structure("dynamic header", data, at, HEADER_COOKIE, checksum_offset=_CHECKSUM_OFFSET)
    (
        _cookie,
        data_offset,
        table_offset,
        version,
        max_entries,
        block_size,
        _checksum,
        parent_id,
        parent_ts,
        _reserved,
        name,
        locator_bytes,
    ) = _HEADER.unpack(data)
    if version >> 16 != 1:
        raise VhdCorrupt(Fault("dynamic header version", at + 24, "0x0001xxxx", f"{version:#010x}"))
    if not MIN_BLOCK <= block_size <= MAX_BLOCK or block_size & (block_size - 1):
        raise VhdCorrupt(
            Fault(
                "dynamic header block size",
                at + 32,
                f"a power of two from {MIN_BLOCK} to {MAX_BLOCK} (4 KiB to 256 MiB)",
                str(block_size),
            )
        )
    if table_offset % SECTOR or table_offset < SECTOR:
        raise VhdCorrupt(
            Fault(
                "dynamic header table offset",
                at + 16,
                f"a multiple of {SECTOR} after the footer copy",
                str(table_offset),
            )
        )
    try:
        parent_name = name.decode("utf-16-be").rstrip("\0")
    except UnicodeDecodeError:
        raise VhdCorrupt(
            Fault("dynamic header parent name", at + 64, "UTF-16BE text", "undecodable bytes")
        ) from None
    locators = tuple(
        ParentLocator(platform, offset, length, space)
        for platform, space, length, _r, offset in (
            _LOCATOR.unpack_from(locator_bytes, i * _LOCATOR.size) for i in range(LOCATOR_COUNT)
        )
    )
    return DynamicHeader(
        table_offset=table_offset,
        max_table_entries=max_entries,
        block_size=block_size,
        parent_unique_id=parent_id,
        parent_timestamp=parent_ts,
        parent_name=parent_name,
        locators=locators,
        data_offset=data_offset,
        version=version,
    )


def sector_align(n: int) -> int:
    """``n`` rounded up to a whole sector."""
    return -(-n // SECTOR) * SECTOR


def bitmap_size(block_size: int) -> int:
    """Bytes of a block's sector bitmap on disk: one bit per sector, padded to a sector boundary."""
    return sector_align(block_size // SECTOR // 8)


def bat_bytes(entries: int) -> int:
    """Bytes the BAT occupies on disk."""
    return sector_align(entries * 4)


def decode_bat(data: bytes, entries: int) -> list[int]:
    """The BAT's sector offsets (``UNUSED`` for unallocated blocks); ``data`` holds at least ``entries``."""
    return list(struct.unpack_from(f">{entries}I", data))


def encode_bat(entries: list[int]) -> bytes:
    """The BAT on disk, padded with unused entries to a sector boundary."""
    padded = entries + [UNUSED] * ((bat_bytes(len(entries)) // 4) - len(entries))
    return struct.pack(f">{len(padded)}I", *padded)


def bit_runs(bitmap: bytes | bytearray, first: int, count: int) -> list[tuple[bool, int, int]]:
    """Split sectors ``[first, first + count)`` into runs ``(is_set, start, length)`` of equal bitmap bits.

    Bit 7 of byte 0 is sector 0 (the spec's big-endian bit order).
    """
    runs: list[tuple[bool, int, int]] = []
    for sector in range(first, first + count):
        bit = bool(bitmap[sector >> 3] & (0x80 >> (sector & 7)))
        if runs and runs[-1][0] == bit:
            runs[-1] = (bit, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((bit, sector, 1))
    return runs


def set_bits(bitmap: bytearray, first: int, count: int) -> None:
    """Mark sectors ``[first, first + count)`` present in a sector bitmap."""
    for sector in range(first, first + count):
        bitmap[sector >> 3] |= 0x80 >> (sector & 7)


def all_set(bitmap: bytes | bytearray, sectors: int) -> bool:
    """Whether the first ``sectors`` bits are all set (the fast path for fully written blocks)."""
    full, rest = divmod(sectors, 8)
    if bitmap[:full].count(0xFF) != full:
        return False
    return not rest or bitmap[full] & (0xFF << (8 - rest)) & 0xFF == (0xFF << (8 - rest)) & 0xFF


def encode_locator_path(platform: bytes, path: str) -> bytes:
    """Platform data for a parent path: Windows kinds are UTF-16LE, MacX is a UTF-8 file URL."""
    if platform == PLATFORM_MACX:
        return ("file://" + path).encode()
    return path.encode("utf-16-le")


def decode_locator_path(platform: bytes, data: bytes) -> str | None:
    """The path in a locator's platform data, with Windows separators made POSIX; None if unreadable."""
    try:
        if platform == PLATFORM_MACX:
            text = data.decode().removeprefix("file://")
        elif platform in (PLATFORM_ABSOLUTE, PLATFORM_RELATIVE):
            text = data.decode("utf-16-le")
        else:
            return None
    except UnicodeDecodeError:
        return None
    text = text.rstrip("\0").replace("\\", "/")
    return text.removeprefix("./") or None
