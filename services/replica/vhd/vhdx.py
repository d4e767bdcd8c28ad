"""Read-only VHDX (MS-VHDX v1): headers, region table, metadata and the interleaved BAT, pure, plus a
``BlockDevice`` over a VHDX file. Fixed and dynamic disks; differencing VHDX and log replay are not
supported and raise a clear error. Writing VHDX is not supported.
"""

from __future__ import annotations

import functools
import itertools
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.replica.vhd import locking
from services.replica.vhd.device import Buffer, check_range, merge_ranges, read_exact
from services.replica.vhd.errors import DeviceReadOnly, VhdCorrupt, VhdInvalid

KIB = 1024
MIB = 1024 * KIB
FILE_SIGNATURE = b"vhdxfile"
HEADER_OFFSETS = (64 * KIB, 128 * KIB)
REGION_OFFSETS = (192 * KIB, 256 * KIB)
HEADER_SIZE = 4 * KIB
REGION_SIZE = 64 * KIB
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
MAX_VHDX_SIZE = 64 * 1024**4
PAYLOAD_ZERO_STATES = frozenset({0, 1, 2, 3})
PAYLOAD_FULLY_PRESENT = 6
PAYLOAD_PARTIALLY_PRESENT = 7


@functools.cache
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries."""
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _checked(data: bytes, signature: bytes, what: str) -> bytes:
    if data[:4] != signature[:4] or not data.startswith(signature):
        raise VhdCorrupt(f"{what} signature is {data[: len(signature)]!r}, not {signature!r}")
    (stored,) = struct.unpack_from("<I", data, 4)
    if crc32c(data[:4] + bytes(4) + data[8:]) != stored:
        raise VhdCorrupt(f"{what} checksum mismatch")
    return data


@dataclass(frozen=True)
class VhdxHeader:
    """The fields of a VHDX header that reading needs."""

    sequence: int
    log_guid: bytes
    version: int


def decode_vhdx_header(data: bytes) -> VhdxHeader:
    """A 4 KiB header; a bad signature or CRC raises ``VhdCorrupt``."""
    _checked(data, b"head", "VHDX header")
    sequence, _file_guid, _data_guid, log_guid, _log_version, version = struct.unpack_from(
        "<Q16s16s16sHH", data, 8
    )
    if version != 1:
        raise VhdCorrupt(f"unsupported VHDX version {version}")
    return VhdxHeader(sequence, log_guid, version)


def current_header(slots: list[bytes]) -> VhdxHeader:
    """The valid header with the highest sequence number."""
    valid = []
    for slot in slots:
        try:
            valid.append(decode_vhdx_header(slot))
        except VhdCorrupt:
            continue
    if not valid:
        raise VhdCorrupt("neither VHDX header is valid")
    return max(valid, key=lambda h: h.sequence)


def decode_regions(data: bytes) -> dict[uuid.UUID, tuple[int, int]]:
    """The region table: GUID -> (file offset, length)."""
    _checked(data, b"regi", "VHDX region table")
    (count,) = struct.unpack_from("<I", data, 8)
    if count > 2047:
        raise VhdCorrupt(f"VHDX region table claims {count} entries")
    regions = {}
    for index in range(count):
        guid, offset, length, _required = struct.unpack_from("<16sQII", data, 16 + 32 * index)
        if offset % MIB or length % MIB or not length:
            raise VhdCorrupt("VHDX region is not 1 MiB aligned")
        regions[uuid.UUID(bytes_le=guid)] = (offset, length)
    for needed in (BAT_GUID, METADATA_GUID):
        if needed not in regions:
            raise VhdCorrupt(f"VHDX region table lacks region {needed}")
    return regions


@dataclass(frozen=True)
class VhdxMetadata:
    """The metadata items reading needs."""

    block_size: int
    has_parent: bool
    virtual_size: int
    logical_sector_size: int

    @property
    def chunk_ratio(self) -> int:
        """Payload blocks per sector bitmap block; the BAT interleaves one bitmap entry after each chunk."""
        return (2**23 * self.logical_sector_size) // self.block_size

    @property
    def payload_blocks(self) -> int:
        return -(-self.virtual_size // self.block_size)

    def bat_index(self, block: int) -> int:
        return block + block // self.chunk_ratio


def decode_metadata(region: bytes) -> VhdxMetadata:
    """Parse the metadata region (table at its start, items at offsets relative to it)."""
    if not region.startswith(b"metadata"):
        raise VhdCorrupt("VHDX metadata table signature is missing")
    (count,) = struct.unpack_from("<H", region, 10)
    if count > 2047:
        raise VhdCorrupt(f"VHDX metadata table claims {count} entries")
    items: dict[uuid.UUID, bytes] = {}
    for index in range(count):
        guid, offset, length, _flags = struct.unpack_from("<16sIII", region, 32 + 32 * index)
        if offset + length > len(region):
            raise VhdCorrupt("VHDX metadata item runs past its region")
        items[uuid.UUID(bytes_le=guid)] = region[offset : offset + length]
    try:
        block_size, flags = struct.unpack("<II", items[FILE_PARAMETERS][:8])
        (size,) = struct.unpack("<Q", items[VIRTUAL_DISK_SIZE][:8])
        (sector,) = struct.unpack("<I", items[LOGICAL_SECTOR_SIZE][:4])
    except (KeyError, struct.error) as error:
        raise VhdCorrupt(f"VHDX metadata item missing or short: {error}") from error
    if not MIB <= block_size <= 256 * MIB or block_size & (block_size - 1):
        raise VhdCorrupt(f"VHDX block size {block_size} is not a power of two in [1 MiB, 256 MiB]")
    if sector not in (512, 4096):
        raise VhdCorrupt(f"VHDX logical sector size {sector} is neither 512 nor 4096")
    if not 0 < size <= MAX_VHDX_SIZE or size % sector:
        raise VhdCorrupt(f"VHDX virtual size {size} is out of range")
    return VhdxMetadata(block_size, bool(flags & 2), size, sector)


def payload_offsets(
    bat: bytes, meta: VhdxMetadata, file_size: int, reserved: list[tuple[int, int]]
) -> list[int | None]:
    """Per payload block, the file offset of its data, or None when it reads as zeros.

    ``reserved`` holds the region ranges (BAT, metadata); no block may overlap them or another block.
    """
    offsets: list[int | None] = []
    for block in range(meta.payload_blocks):
        index = meta.bat_index(block)
        if 8 * index + 8 > len(bat):
            raise VhdCorrupt("VHDX BAT is shorter than the disk needs")
        (entry,) = struct.unpack_from("<Q", bat, 8 * index)
        state, offset = entry & 7, (entry >> 20) * MIB
        if state in PAYLOAD_ZERO_STATES:
            offsets.append(None)
        elif state == PAYLOAD_FULLY_PRESENT:
            if offset < 1 * MIB or offset + meta.block_size > file_size:
                raise VhdCorrupt(f"VHDX block {block} points past the end of the file")
            offsets.append(offset)
        elif state == PAYLOAD_PARTIALLY_PRESENT:
            raise VhdInvalid("partially present VHDX blocks belong to differencing disks (unsupported)")
        else:
            raise VhdCorrupt(f"VHDX block {block} has invalid state {state}")
    extents = sorted([(o, meta.block_size) for o in offsets if o is not None] + reserved)
    if any(b[0] < a[0] + a[1] for a, b in itertools.pairwise(extents)):
        raise VhdCorrupt("VHDX blocks overlap each other or a region")
    return offsets


class VhdxDisk:
    """A read-only fixed or dynamic VHDX."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        try:
            locking.hold(self._fd, locking.READER, path)
            self._load()
        except BaseException:
            os.close(self._fd)
            raise

    def _load(self) -> None:
        file_size = os.fstat(self._fd).st_size
        if file_size < 1 * MIB or read_exact(self._fd, 0, 8) != FILE_SIGNATURE:
            raise VhdCorrupt(f"{self.path} is not a VHDX file")
        header = current_header([read_exact(self._fd, o, HEADER_SIZE) for o in HEADER_OFFSETS])
        if header.log_guid != bytes(16):
            raise VhdInvalid("the VHDX log must be replayed first (open it once with Hyper-V or qemu-img)")
        regions = None
        for offset in REGION_OFFSETS:
            try:
                regions = decode_regions(read_exact(self._fd, offset, REGION_SIZE))
                break
            except VhdCorrupt:
                continue
        if regions is None:
            raise VhdCorrupt("neither VHDX region table is valid")
        meta_offset, meta_length = regions[METADATA_GUID]
        bat_offset, bat_length = regions[BAT_GUID]
        if max(meta_offset + meta_length, bat_offset + bat_length) > file_size:
            raise VhdCorrupt("a VHDX region runs past the end of the file")
        self.metadata = decode_metadata(read_exact(self._fd, meta_offset, meta_length))
        if self.metadata.has_parent:
            raise VhdInvalid("differencing VHDX is not supported")
        self._offsets = payload_offsets(
            read_exact(self._fd, bat_offset, bat_length),
            self.metadata,
            file_size,
            [(meta_offset, meta_length), (bat_offset, bat_length)],
        )

    @property
    def virtual_size(self) -> int:
        return self.metadata.virtual_size

    @property
    def block_size(self) -> int:
        return self.metadata.block_size

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self.virtual_size)
        parts = []
        end = offset + length
        while offset < end:
            block, start = divmod(offset, self.block_size)
            n = min(self.block_size - start, end - offset)
            data_offset = self._offsets[block]
            parts.append(bytes(n) if data_offset is None else read_exact(self._fd, data_offset + start, n))
            offset += n
        return b"".join(parts)

    def write(self, offset: int, data: Buffer) -> None:
        raise DeviceReadOnly("Overland reads VHDX but does not write it")

    def write_zeroes(self, offset: int, length: int) -> None:
        raise DeviceReadOnly("Overland reads VHDX but does not write it")

    def flush(self) -> None:
        """Nothing to flush: the disk is read-only."""

    def allocated_ranges(self) -> list[tuple[int, int]]:
        size, block = self.virtual_size, self.block_size
        return merge_ranges(
            [(i * block, min(block, size - i * block)) for i, o in enumerate(self._offsets) if o is not None]
        )

    def close(self) -> None:
        os.close(self._fd)
