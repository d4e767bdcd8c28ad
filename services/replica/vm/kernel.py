"""The guest kernel as an uncompressed ELF with a PVH entry point, extracted from Debian's bzImage (pure).

A bzImage decompresses itself after the firmware has loaded it; under TCG that takes most of the
boot (about 8 s of a 20 s boot on a loaded machine). qemu boots an ELF ``vmlinux`` that carries a
PVH entry note (``XEN_ELFNOTE_PHYS32_ENTRY``) straight into 32-bit mode, with neither the firmware's
real-mode loader nor the decompression. ``extract_vmlinux`` finds the compressed kernel inside the
bzImage, as the kernel's own ``scripts/extract-vmlinux`` does.
"""

from __future__ import annotations

import lzma
import struct
import zlib

import zstandard

ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18
# The compressed payload's magic numbers; the kernel may be built with any of these.
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _decompress(kind: bytes, data: bytes) -> bytes | None:
    try:
        if kind == XZ_MAGIC:
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if kind == GZIP_MAGIC:
            # The payload is followed by other bytes: a decompressobj stops at the stream's end.
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except (lzma.LZMAError, zlib.error, zstandard.ZstdError, EOFError):
        return None


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside ``bzimage`` (xz, gzip or zstd compressed), or None if none is found."""
    for magic in (XZ_MAGIC, ZSTD_MAGIC, GZIP_MAGIC):
        start = bzimage.find(magic)
        while start != -1:
            elf = _decompress(magic, bzimage[start:])
            if elf is not None and elf.startswith(ELF_MAGIC):
                return elf
            start = bzimage.find(magic, start + 1)
    return None


def elf_notes(elf: bytes) -> list[tuple[str, int, bytes]]:
    """The ``(name, type, descriptor)`` notes of a little-endian 64-bit ELF's PT_NOTE segments."""
    if not elf.startswith(ELF_MAGIC) or len(elf) < 64 or elf[4] != 2 or elf[5] != 1:
        return []
    (phoff,) = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    notes = []
    for index in range(phnum):
        at = phoff + index * phentsize
        if at + 56 > len(elf):
            break
        kind, _flags, offset, _vaddr, _paddr, size = struct.unpack_from("<IIQQQQ", elf, at)
        if kind != PT_NOTE:
            continue
        end = min(offset + size, len(elf))
        while offset + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, offset)
            name_at = offset + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            next_at = desc_at + (descsz + 3) // 4 * 4
            if next_at > end:
                break
            name = elf[name_at : name_at + namesz].rstrip(b"\0").decode(errors="replace")
            notes.append((name, note_type, elf[desc_at : desc_at + descsz]))
            offset = next_at
    return notes


def has_pvh_entry(elf: bytes) -> bool:
    """Whether qemu can boot this ELF kernel directly (it has a Xen PHYS32_ENTRY note)."""
    return any(name == "Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY for name, kind, _ in elf_notes(elf))
