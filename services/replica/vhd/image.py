"""Opening and creating disk images: ``open_disk`` checks the named format and every structure, and
locks the file as qemu does, before it serves a byte.

The format is never guessed: ``DiskFormat.VHD`` (the default) accepts fixed, dynamic and
differencing VHDs (and a VHDX read-only) and refuses anything else with what is wrong and where;
``DiskFormat.RAW`` must be asked for. The pure checks are in ``services.replica.vhd.check``, the
locks in ``services.replica.vhd.locking``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.replica.vhd import locking
from services.replica.vhd.check import (
    DiskFormat,
    Read,
    check_fixed,
    find_footer,
    is_vhdx,
    load_layout,
)
from services.replica.vhd.device import BlockDevice, FileDevice, read_upto
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
from services.replica.vhd.dynamic_disk import DynamicDisk
from services.replica.vhd.errors import Fault, VhdCorrupt, VhdInvalid, VhdParentError
from services.replica.vhd.footer import FIXED_DATA_OFFSET, FOOTER_SIZE, DiskType, Footer, new_footer
from services.replica.vhd.locking import BACKING, READER, WRITER, LockMode
from services.replica.vhd.vhdx import VhdxDisk

MAX_CHAIN = 16


def open_disk(
    path: str | os.PathLike[str], writable: bool = False, fmt: DiskFormat = DiskFormat.VHD
) -> BlockDevice:
    """Open a disk image as ``fmt`` says: a VHD (fixed, dynamic or differencing; a VHDX read-only),
    or a raw file.

    Everything is checked before the device is returned and nothing is written before: a file that
    is not of the format raises ``VhdCorrupt`` (what is wrong, and where), a file another process or
    open uses in a conflicting way raises ``DiskLocked``. A writable open holds qemu's writer locks
    until ``close``; a read-only one, qemu's ``-U`` (it never blocks a writer).
    """
    if not isinstance(fmt, DiskFormat):
        raise VhdInvalid(f"format must be one of {[f.value for f in DiskFormat]}, got {fmt!r}")
    image = Path(path)
    if not image.is_file():
        raise VhdInvalid(f"disk image not found: {image}")
    mode = WRITER if writable else READER
    if fmt is DiskFormat.RAW:
        fd = _open_locked(image, writable, mode)
        return FileDevice(image, os.fstat(fd).st_size, writable, fd=fd)
    return _open_image(image, writable, mode, fmt, chain=())


def read_footer(path: Path) -> Footer | None:
    """The validated footer of the VHD at ``path``, or None when it is not a valid VHD."""
    found = _probe(path)
    return found if isinstance(found, Footer) else None


def _probe(path: Path) -> Footer | VhdCorrupt:
    """The footer of ``path``, or why it is not a VHD."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return find_footer(_reader(fd, path), os.fstat(fd).st_size)
    except VhdCorrupt as error:
        return error.at(path) if error.path is None else error
    finally:
        os.close(fd)


def _open_locked(image: Path, writable: bool, mode: LockMode) -> int:
    fd = os.open(image, os.O_RDWR if writable else os.O_RDONLY)
    try:
        locking.hold(fd, mode, image)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _reader(fd: int, image: Path) -> Read:
    """``pread`` for the pure checks, which read only ranges inside the file: short means it shrank."""

    def read(offset: int, length: int) -> bytes:
        data = read_upto(fd, offset, length)
        if len(data) < length:
            raise VhdCorrupt(
                Fault(
                    "file", offset, f"{length} bytes", f"{len(data)}: the file shrank while it was checked"
                ),
                image,
            )
        return data

    return read


@contextmanager
def _naming(image: Path) -> Iterator[None]:
    """The pure checks' errors, naming the file they were found in."""
    try:
        yield
    except VhdCorrupt as error:
        if error.path is not None:
            raise
        raise error.at(image) from None


def _open_image(
    image: Path, writable: bool, mode: LockMode, fmt: DiskFormat, chain: tuple[tuple[int, int], ...]
) -> BlockDevice:
    """Open, lock and check one image of a chain (``chain``: the (device, inode) of its children)."""
    fd = os.open(image, os.O_RDWR if writable else os.O_RDONLY)
    parent: BlockDevice | None = None
    try:
        stat = os.fstat(fd)
        identity = (stat.st_dev, stat.st_ino)
        # Before locking: a loop would otherwise meet its own lock, a less useful error.
        if identity in chain:
            raise VhdParentError(f"the parent chain loops: {image} is its own ancestor")
        if len(chain) > MAX_CHAIN:
            raise VhdParentError(f"the differencing chain is deeper than {MAX_CHAIN} at {image}")
        locking.hold(fd, mode, image)
        read = _reader(fd, image)
        with _naming(image):
            if fmt is DiskFormat.VHDX or is_vhdx(read, stat.st_size):
                _check_vhdx(image, read, stat.st_size, writable, fmt)
                os.close(fd)  # VhdxDisk opens (and -U-locks) the file itself
                fd = -1
                return VhdxDisk(image)
            footer = find_footer(read, stat.st_size)
            if footer.disk_type is DiskType.FIXED:
                if chain:
                    raise VhdParentError(f"parent {image} is a fixed disk, which Overland does not chain")
                check_fixed(footer, stat.st_size)
                return FileDevice(image, footer.current_size, writable, fd=fd)
            layout = load_layout(read, footer, stat.st_size)
        if footer.disk_type is DiskType.DIFFERENCING:
            parent = _open_parent(image, layout.header, writable, (*chain, identity))
            if parent.virtual_size != footer.current_size:
                raise VhdParentError(
                    f"parent of {image} has {parent.virtual_size} bytes, the child {footer.current_size}"
                )
        return DynamicDisk(image, fd, footer, layout, parent=parent, writable=writable)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if parent is not None:
            parent.close()
        raise


def _check_vhdx(image: Path, read: Read, file_size: int, writable: bool, fmt: DiskFormat) -> None:
    if writable:
        raise VhdInvalid(f"{image} is VHDX, which Overland opens read-only (convert it to VHD to write)")
    if fmt is DiskFormat.VHDX and not is_vhdx(read, file_size):
        found = repr(read(0, 8)) if file_size >= 8 else f"a file of {file_size} bytes"
        raise VhdCorrupt(Fault("VHDX signature", 0, "b'vhdxfile'", found))


def open_over(path: str | os.PathLike[str], parent: BlockDevice, writable: bool = False) -> DynamicDisk:
    """Open the differencing VHD at ``path`` (checked and locked as ``open_disk`` does) over
    ``parent``, a device the caller opened (and closes: the child does not), instead of the parent
    its locators name. For a parent whose owner guarantees the child's view while it changes the
    parent on purpose (the DR site's point disks: it opens the replica read-only, which never blocks
    its own commits' writer)."""
    image = Path(path)
    if not image.is_file():
        raise VhdInvalid(f"disk image not found: {image}")
    fd = _open_locked(image, writable, WRITER if writable else READER)
    try:
        size = os.fstat(fd).st_size
        read = _reader(fd, image)
        with _naming(image):
            footer = find_footer(read, size)
            if footer.disk_type is not DiskType.DIFFERENCING:
                raise VhdInvalid(f"{image} is not a differencing VHD")
            layout = load_layout(read, footer, size)
        if parent.virtual_size != footer.current_size:
            raise VhdParentError(
                f"parent of {image} has {parent.virtual_size} bytes, the child {footer.current_size}"
            )
        return DynamicDisk(image, fd, footer, layout, parent=parent, writable=writable, owns_parent=False)
    except BaseException:
        os.close(fd)
        raise


def parent_candidates(child: Path, header: DynamicHeader) -> list[Path]:
    """Where the locators say the parent is, relative ones (resolved from the child's folder) first.

    The locators' data ranges were checked against the file when the child was opened.
    """
    with child.open("rb") as file:
        candidates = []
        for locator in sorted(header.locators, key=lambda loc: loc.platform != PLATFORM_RELATIVE):
            if not locator.data_length:
                continue
            file.seek(locator.data_offset)
            text = decode_locator_path(locator.platform, file.read(locator.data_length))
            if text is not None:
                candidates.append(child.parent / text)
    return candidates


def _open_parent(
    child: Path, header: DynamicHeader, writable: bool, chain: tuple[tuple[int, int], ...]
) -> BlockDevice:
    """The parent, checked like any image; locked so nobody changes it under a writable child."""
    refused: VhdCorrupt | None = None
    for candidate in parent_candidates(child, header):
        if not candidate.is_file():
            continue
        footer = _probe(candidate)
        if isinstance(footer, VhdCorrupt):
            # Another locator may name the parent; if none does, this is what is wrong with it.
            refused = refused or footer
            continue
        if footer.unique_id != header.parent_unique_id:
            raise VhdParentError(
                f"{candidate} is not the parent of {child}: unique id {footer.unique_id.hex()} "
                f"!= {header.parent_unique_id.hex()}"
            )
        return _open_image(candidate, False, BACKING if writable else READER, DiskFormat.VHD, chain)
    if refused is not None:
        raise refused
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
    """Create a differencing VHD over a VHD ``parent``; it reads as the parent.

    A fixed parent is allowed (the spec and Hyper-V allow it; the DR site's replica disks are fixed),
    but ``open_disk`` does not chain one: open such a child with ``open_over``."""
    parent_path = Path(parent).absolute()
    parent_footer = read_footer(parent_path)
    if parent_footer is None:
        raise VhdInvalid(f"parent {parent_path} must be a VHD")
    if parent_footer.disk_type is DiskType.FIXED:
        block_size = DEFAULT_VHD_BLOCK
    else:
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
