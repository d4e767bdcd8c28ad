"""The VHD hard disk footer: codec, one's-complement checksum and the CHS geometry algorithm.

Pure code over bytes, following the Microsoft Virtual Hard Disk Image Format Specification. Every VHD
ends with this 512-byte structure; dynamic and differencing disks also keep a copy at offset 0.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from services.replica.vhd.errors import Fault, VhdCorrupt, VhdInvalid

SECTOR = 512
FOOTER_SIZE = 512
FOOTER_COOKIE = b"conectix"
FEATURES_RESERVED = 0x00000002
FORMAT_VERSION = 0x00010000
FIXED_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
# The spec's largest VHD (the BAT and CHS limits agree on about 2040 GiB); larger sizes are corrupt input.
MAX_DISK_SIZE = 2040 * 1024**3
VHD_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Hyper-V's creator fields. qemu trusts current_size (not CHS) only for known creators such as "win ",
# and Overland disks are Hyper-V disks, so they carry Hyper-V's creator and current_size is exact.
CREATOR_APP = b"win "
CREATOR_VERSION = 0x000A0000
CREATOR_HOST_OS = b"Wi2k"

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427x")
_CHECKSUM_OFFSET = 64


class DiskType(IntEnum):
    """The footer's disk type field."""

    FIXED = 2
    DYNAMIC = 3
    DIFFERENCING = 4


@dataclass(frozen=True)
class Geometry:
    """Cylinders, heads and sectors per track, as the footer stores them."""

    cylinders: int
    heads: int
    sectors: int

    @property
    def total_sectors(self) -> int:
        return self.cylinders * self.heads * self.sectors


@dataclass(frozen=True)
class Footer:
    """A decoded hard disk footer. ``checksum`` is recomputed by ``encode``."""

    disk_type: DiskType
    current_size: int
    original_size: int
    geometry: Geometry
    data_offset: int
    unique_id: bytes
    timestamp: int = 0
    features: int = FEATURES_RESERVED
    version: int = FORMAT_VERSION
    creator_app: bytes = CREATOR_APP
    creator_version: int = CREATOR_VERSION
    creator_host_os: bytes = CREATOR_HOST_OS
    saved_state: int = 0
    checksum: int = 0

    def encode(self) -> bytes:
        raw = _pack_footer(self, 0)
        return _pack_footer(self, ones_complement_checksum(raw))


def _pack_footer(f: Footer, checksum: int) -> bytes:
    return _FOOTER.pack(
        FOOTER_COOKIE,
        f.features,
        f.version,
        f.data_offset,
        f.timestamp,
        f.creator_app,
        f.creator_version,
        f.creator_host_os,
        f.original_size,
        f.current_size,
        f.geometry.cylinders,
        f.geometry.heads,
        f.geometry.sectors,
        int(f.disk_type),
        checksum,
        f.unique_id,
        f.saved_state,
    )


def ones_complement_checksum(data: bytes, skip: tuple[int, int] | None = None) -> int:
    """The spec's checksum: the one's complement of the byte sum, with the ``skip`` slice counted as zero."""
    total = sum(data)
    if skip is not None:
        total -= sum(data[skip[0] : skip[1]])
    return ~total & 0xFFFFFFFF


def check_structure(what: str, data: bytes, at: int, wanted_cookie: bytes, *, checksum_offset: int) -> None:
    """The cookie and one's-complement checksum every VHD structure (footer, dynamic header) carries.

    ``at`` is the structure's byte offset in the file, for the error's whereabouts.
    """
    cookie = data[: len(wanted_cookie)]
    if cookie != wanted_cookie:
        raise VhdCorrupt(Fault(f"{what} cookie", at, repr(wanted_cookie), repr(cookie)))
    (checksum,) = struct.unpack_from(">I", data, checksum_offset)
    expected = ones_complement_checksum(data, (checksum_offset, checksum_offset + 4))
    if checksum != expected:
        raise VhdCorrupt(
            Fault(f"{what} checksum", at + checksum_offset, f"{expected:#010x}", f"{checksum:#010x}")
        )


def decode_footer(data: bytes, at: int = 0) -> Footer:
    """Decode and validate a footer found at byte ``at`` of the file; a malformed field raises
    ``VhdCorrupt`` naming it, its offset, what was expected and what was found."""
    if len(data) != FOOTER_SIZE:
        raise VhdCorrupt(Fault("footer", at, f"{FOOTER_SIZE} bytes", f"{len(data)} before the end of file"))
    check_structure("footer", data, at, FOOTER_COOKIE, checksum_offset=_CHECKSUM_OFFSET)
    (
        _cookie,
        features,
        version,
        data_offset,
        timestamp,
        creator_app,
        creator_version,
        creator_host_os,
        original_size,
        current_size,
        cylinders,
        heads,
        sectors,
        disk_type,
        checksum,
        unique_id,
        saved_state,
    ) = _FOOTER.unpack(data)
    if version >> 16 != 1:
        raise VhdCorrupt(Fault("footer format version", at + 12, "0x0001xxxx", f"{version:#010x}"))
    if disk_type not in {t.value for t in DiskType}:
        raise VhdCorrupt(
            Fault("footer disk type", at + 60, "2 (fixed), 3 (dynamic) or 4 (differencing)", str(disk_type))
        )
    if current_size % SECTOR or not 0 < current_size <= MAX_DISK_SIZE:
        raise VhdCorrupt(
            Fault(
                "footer current size",
                at + 48,
                f"a positive multiple of {SECTOR} up to {MAX_DISK_SIZE} (2040 GiB)",
                str(current_size),
            )
        )
    kind = DiskType(disk_type)
    if kind is DiskType.FIXED and data_offset != FIXED_DATA_OFFSET:
        raise VhdCorrupt(
            Fault(
                "footer data offset", at + 16, f"{FIXED_DATA_OFFSET:#x} for a fixed disk", f"{data_offset:#x}"
            )
        )
    if kind is not DiskType.FIXED and (data_offset % SECTOR or data_offset < FOOTER_SIZE):
        raise VhdCorrupt(
            Fault(
                "footer data offset",
                at + 16,
                f"the dynamic header's offset: a multiple of {SECTOR}, at least {FOOTER_SIZE}",
                str(data_offset),
            )
        )
    return Footer(
        disk_type=kind,
        current_size=current_size,
        original_size=original_size,
        geometry=Geometry(cylinders, heads, sectors),
        data_offset=data_offset,
        unique_id=unique_id,
        timestamp=timestamp,
        features=features,
        version=version,
        creator_app=creator_app,
        creator_version=creator_version,
        creator_host_os=creator_host_os,
        saved_state=saved_state,
        checksum=checksum,
    )


def chs_geometry(size: int) -> Geometry:
    """The spec's CHS algorithm (appendix "CHS calculation") for a disk of ``size`` bytes."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        sectors, heads = 255, 16
        cyl_times_heads = total // sectors
    else:
        sectors = 17
        cyl_times_heads = total // sectors
        heads = max((cyl_times_heads + 1023) // 1024, 4)
        if cyl_times_heads >= heads * 1024 or heads > 16:
            sectors, heads = 31, 16
            cyl_times_heads = total // sectors
        if cyl_times_heads >= heads * 1024:
            sectors, heads = 63, 16
            cyl_times_heads = total // sectors
    return Geometry(cyl_times_heads // heads, heads, sectors)


def vhd_timestamp(when: datetime | None = None) -> int:
    """Seconds since 2000-01-01 00:00 UTC, the footer's timestamp field."""
    moment = when or datetime.now(UTC)
    return max(0, int((moment - VHD_EPOCH).total_seconds())) & 0xFFFFFFFF


def new_footer(disk_type: DiskType, size: int, data_offset: int, unique_id: bytes | None = None) -> Footer:
    """A footer for a new image of exactly ``size`` bytes (Hyper-V semantics: current_size is exact)."""
    if size % SECTOR or not 0 < size <= MAX_DISK_SIZE:
        raise VhdInvalid(f"disk size {size} must be a positive multiple of 512 up to 2040 GiB")
    return Footer(
        disk_type=disk_type,
        current_size=size,
        original_size=size,
        geometry=chs_geometry(size),
        data_offset=data_offset,
        unique_id=unique_id or uuid.uuid4().bytes,
        timestamp=vhd_timestamp(),
    )
