"""Opening and creating disk images: ``open_disk`` tells raw, fixed, dynamic and differencing VHD apart."""

from __future__ import annotations

import os
from pathlib import Path

from services.replica.vhd.device import BlockDevice, FileDevice, read_exact
from services.replica.vhd.dynamic import (
    DEFAULT_VHD_BLOCK,
    EMPTY_LOCATOR,
    HEADER_SIZE,
    LOCATOR_COUNT,
    MAX_BLOCK,
    MIN_BLOCK,
    PLATFORM_ABSOLUTE,
    PLATFORM_RELATIVE,
    UNUSED,
    DynamicHeader,
    ParentLocator,
    bat_bytes,
    decode_locator_path,
    encode_bat,
    encode_locator_path,
    sector_align,
)
from services.replica.vhd.dynamic_disk import DynamicDisk, load_layout
from services.replica.vhd.errors import VhdCorrupt, VhdInvalid, VhdParentError
from services.replica.vhd.footer import (
    FIXED_DATA_OFFSET,
    FOOTER_COOKIE,
    FOOTER_SIZE,
    DiskType,
    Footer,
    decode_footer,
    new_footer,
)
from services.replica.vhd.vhdx import FILE_SIGNATURE as VHDX_SIGNATURE
from services.replica.vhd.vhdx import VhdxDisk

FORMATS = ("auto", "raw", "vhd", "vhdx")
MAX_CHAIN = 16
MAX_LOCATOR_BYTES = 64 * 1024


def probe_footer(fd: int, file_size: int) -> Footer | None:
    """The image's footer, or None when the file is not a VHD (no cookie at the end nor at offset 0).

    A dynamic disk's footer copy at offset 0 stands in for a torn footer at the end, as the spec intends.
    """
    if file_size < FOOTER_SIZE:
        return None
    tail = read_exact(fd, file_size - FOOTER_SIZE, FOOTER_SIZE)
    head = read_exact(fd, 0, FOOTER_SIZE)
    if not tail.startswith(FOOTER_COOKIE) and not head.startswith(FOOTER_COOKIE):
        return None
    try:
        return decode_footer(tail)
    except VhdCorrupt:
        if not head.startswith(FOOTER_COOKIE):
            raise
        footer = decode_footer(head)
        if footer.disk_type is DiskType.FIXED:
            raise
        return footer


def open_disk(path: str | os.PathLike[str], writable: bool = False, fmt: str = "auto") -> BlockDevice:
    """Open a disk image, choosing fixed/dynamic/differencing VHD, VHDX (read-only) or raw by its content
    (or by ``fmt``).

    Malformed images raise ``VhdCorrupt`` before anything is written.
    """
    if fmt not in FORMATS:
        raise VhdInvalid(f"format must be one of {FORMATS}, got {fmt!r}")
    image = Path(path)
    if not image.is_file():
        raise VhdInvalid(f"disk image not found: {image}")
    file_size = image.stat().st_size
    if fmt == "raw":
        return FileDevice(image, file_size, writable)
    fd = os.open(image, os.O_RDONLY)
    try:
        is_vhdx = read_exact(fd, 0, len(VHDX_SIGNATURE)) == VHDX_SIGNATURE
        footer = None if is_vhdx or fmt == "vhdx" else probe_footer(fd, file_size)
    finally:
        os.close(fd)
    if is_vhdx or fmt == "vhdx":
        if writable:
            raise VhdInvalid(f"{image} is VHDX, which Overland opens read-only (convert it to VHD to write)")
        return VhdxDisk(image)
    if footer is None:
        if fmt == "vhd":
            raise VhdCorrupt(f"{image} has no VHD footer")
        return FileDevice(image, file_size, writable)
    if footer.disk_type is DiskType.FIXED:
        if file_size - FOOTER_SIZE < footer.current_size:
            raise VhdCorrupt(
                f"fixed disk of {footer.current_size} bytes is truncated to {file_size - FOOTER_SIZE}"
            )
        return FileDevice(image, footer.current_size, writable)
    return _open_dynamic(image, footer, writable, depth=0)


def read_footer(path: Path) -> Footer | None:
    """The footer of the VHD at ``path``, or None when it is not a VHD."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return probe_footer(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _open_dynamic(image: Path, footer: Footer, writable: bool, depth: int) -> DynamicDisk:
    if depth > MAX_CHAIN:
        raise VhdParentError(f"differencing chain deeper than {MAX_CHAIN} at {image} (a loop?)")
    fd = os.open(image, os.O_RDWR if writable else os.O_RDONLY)
    parent: BlockDevice | None = None
    try:
        layout = load_layout(fd, footer, os.fstat(fd).st_size)
        if footer.disk_type is DiskType.DIFFERENCING:
            parent = _open_parent(image, layout.header, depth)
            if parent.virtual_size != footer.current_size:
                raise VhdParentError(
                    f"parent of {image} has {parent.virtual_size} bytes, the child {footer.current_size}"
                )
        return DynamicDisk(image, fd, footer, layout, parent=parent, writable=writable)
    except BaseException:
        os.close(fd)
        if parent is not None:
            parent.close()
        raise


def parent_candidates(child: Path, header: DynamicHeader) -> list[Path]:
    """Where the locators say the parent is, relative ones (resolved from the child's folder) first."""
    with child.open("rb") as file:
        candidates = []
        for locator in sorted(header.locators, key=lambda loc: loc.platform != PLATFORM_RELATIVE):
            if not locator.data_length or locator.data_length > MAX_LOCATOR_BYTES:
                continue
            file.seek(locator.data_offset)
            text = decode_locator_path(locator.platform, file.read(locator.data_length))
            if text is not None:
                candidates.append(child.parent / text)
    return candidates


def _open_parent(child: Path, header: DynamicHeader, depth: int) -> DynamicDisk:
    for candidate in parent_candidates(child, header):
        if not candidate.is_file():
            continue
        footer = read_footer(candidate)
        if footer is None or footer.disk_type is DiskType.FIXED:
            if footer is not None and footer.unique_id == header.parent_unique_id:
                raise VhdParentError(f"parent {candidate} is a fixed disk, which Overland does not chain")
            continue
        if footer.unique_id != header.parent_unique_id:
            raise VhdParentError(
                f"{candidate} is not the parent of {child}: unique id {footer.unique_id.hex()} "
                f"!= {header.parent_unique_id.hex()}"
            )
        return _open_dynamic(candidate, footer, writable=False, depth=depth + 1)
    raise VhdParentError(f"the parent of {child} ({header.parent_name!r}) is not found")


def create_fixed(path: str | os.PathLike[str], size: int, unique_id: bytes | None = None) -> Path:
    """Create a fixed VHD of exactly ``size`` bytes (sparse on disk), reading as zeros."""
    footer = new_footer(DiskType.FIXED, size, FIXED_DATA_OFFSET, unique_id)
    image = Path(path)
    with image.open("xb") as file:
        file.truncate(size)
        file.seek(size)
        file.write(footer.encode())
        file.flush()
        os.fsync(file.fileno())
    return image


def create_dynamic(
    path: str | os.PathLike[str],
    size: int,
    block_size: int = DEFAULT_VHD_BLOCK,
    unique_id: bytes | None = None,
) -> Path:
    """Create an empty dynamic VHD of exactly ``size`` bytes."""
    return _create_sparse(Path(path), DiskType.DYNAMIC, size, block_size, unique_id=unique_id, parent=None)


def create_differencing(
    path: str | os.PathLike[str], parent: str | os.PathLike[str], unique_id: bytes | None = None
) -> Path:
    """Create a differencing VHD over a dynamic or differencing ``parent``; it reads as the parent."""
    parent_path = Path(parent).absolute()
    parent_footer = read_footer(parent_path)
    if parent_footer is None or parent_footer.disk_type is DiskType.FIXED:
        raise VhdInvalid(f"parent {parent_path} must be a dynamic or differencing VHD")
    checked = open_disk(parent_path)
    try:
        block_size = checked.block_size
    finally:
        checked.close()
    return _create_sparse(
        Path(path),
        DiskType.DIFFERENCING,
        parent_footer.current_size,
        block_size,
        unique_id=unique_id,
        parent=(parent_path, parent_footer),
    )


def _create_sparse(
    image: Path,
    kind: DiskType,
    size: int,
    block_size: int,
    *,
    unique_id: bytes | None,
    parent: tuple[Path, Footer] | None,
) -> Path:
    if not MIN_BLOCK <= block_size <= MAX_BLOCK or block_size & (block_size - 1):
        raise VhdInvalid(f"block size {block_size} must be a power of two between 4 KiB and 256 MiB")
    table_offset = FOOTER_SIZE + HEADER_SIZE
    entries = -(-size // block_size)
    footer = new_footer(kind, size, FOOTER_SIZE, unique_id)
    end = table_offset + bat_bytes(entries)
    locators = [EMPTY_LOCATOR] * LOCATOR_COUNT
    locator_data = b""
    header = DynamicHeader(table_offset=table_offset, max_table_entries=entries, block_size=block_size)
    if parent is not None:
        parent_path, parent_footer = parent
        relative = os.path.relpath(parent_path, image.absolute().parent)
        for slot, (platform, text) in enumerate(
            ((PLATFORM_RELATIVE, relative), (PLATFORM_ABSOLUTE, str(parent_path)))
        ):
            data = encode_locator_path(platform, text)
            space = sector_align(len(data))
            locators[slot] = ParentLocator(platform, end, len(data), space // 512)
            locator_data += data.ljust(space, b"\0")
            end += space
        header = DynamicHeader(
            table_offset=table_offset,
            max_table_entries=entries,
            block_size=block_size,
            parent_unique_id=parent_footer.unique_id,
            parent_timestamp=parent_footer.timestamp,
            parent_name=str(parent_path)[:256],
            locators=tuple(locators),
        )
    encoded = footer.encode()
    with image.open("xb") as file:
        file.write(encoded)
        file.write(header.encode())
        file.write(encode_bat([UNUSED] * entries))
        file.write(locator_data)
        file.write(encoded)
        file.flush()
        os.fsync(file.fileno())
    return image
