"""Pure parts of the guest image build: the kernel modules' load order, and the initramfs archive.

``module_order`` reads ``modprobe --show-depends`` output: each module comes after what it needs, and
a module several others need appears once, where it is first needed. ``newc_archive`` writes the
``newc`` cpio format the kernel unpacks (no ``cpio`` tool, no device nodes on the build host, and the
same bytes for the same inputs).
"""

from __future__ import annotations

import gzip
import io
import stat
from collections.abc import Sequence
from pathlib import PurePosixPath

from services.replica.vm.errors import InvalidVmSpec
from services.replica.vm.scripts import ImageFile, Kind

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
# Compression suffixes a distribution may give its modules; the build stores them uncompressed, as
# busybox insmod loads only plain ELF objects.
COMPRESSED_SUFFIXES = (".xz", ".zst", ".gz")


def module_order(show_depends: str) -> list[str]:
    """The module files to load, in order, from ``modprobe --show-depends -a ...`` output.

    ``insmod PATH [PARAMS]`` lines give a file (parameters are dropped: the guest loads modules with
    their defaults); ``builtin NAME`` lines need nothing. Anything else is an error, as it means the
    output is not what this parser knows.
    """
    order: list[str] = []
    for number, line in enumerate(show_depends.splitlines(), 1):
        words = line.split()
        if not words or words[0] == "builtin":
            continue
        if words[0] != "insmod" or len(words) < 2 or not words[1].startswith("/"):
            raise InvalidVmSpec(
                f"modprobe output line {number} is not 'insmod PATH' or 'builtin NAME': {line!r}"
            )
        if words[1] not in order:
            order.append(words[1])
    return order


def module_file_name(path: str) -> str:
    """The name a module file has in the initramfs: its base name without a compression suffix."""
    name = PurePosixPath(path).name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _newc_entry(name: str, mode: int, data: bytes, inode: int, rdev: tuple[int, int] = (0, 0)) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0, *rdev, len(encoded), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
    # The name is padded so that header + name is a multiple of 4; then the data, padded likewise.
    return header + encoded + _pad(len(header) + len(encoded)) + data + _pad(len(data))


def newc_archive(files: Sequence[ImageFile]) -> bytes:
    """A newc cpio archive of ``files`` (owned by root, time 0), in the given order."""
    type_bits = {
        Kind.FILE: stat.S_IFREG,
        Kind.DIRECTORY: stat.S_IFDIR,
        Kind.SYMLINK: stat.S_IFLNK,
        Kind.CHAR_DEVICE: stat.S_IFCHR,
    }
    out = io.BytesIO()
    seen: set[str] = set()
    for inode, file in enumerate(files, 1):
        if file.path in seen or not file.path or file.path.startswith("/"):
            raise InvalidVmSpec(f"image path {file.path!r} is empty, absolute or given twice")
        seen.add(file.path)
        data = file.target.encode() if file.kind is Kind.SYMLINK else file.data
        rdev = file.device if file.kind is Kind.CHAR_DEVICE else (0, 0)
        out.write(_newc_entry(file.path, type_bits[file.kind] | file.mode, data, inode, rdev))
    out.write(_newc_entry(TRAILER, 0, b"", 0))
    return out.getvalue()


def gzip_archive(archive: bytes) -> bytes:
    """``archive`` gzipped with no name and time 0, so equal inputs give equal bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as stream:
        stream.write(archive)
    return out.getvalue()
