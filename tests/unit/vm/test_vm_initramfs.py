"""The pure parts of the guest image build: module load order, the newc archive, the kernel ELF."""

from __future__ import annotations

import gzip
import lzma
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from services.replica.vm import (
    ImageFile,
    InvalidVmSpec,
    Kind,
    elf_notes,
    extract_vmlinux,
    gzip_archive,
    has_pvh_entry,
    module_file_name,
    module_order,
    newc_archive,
)
from services.replica.vm.kernel import XEN_ELFNOTE_PHYS32_ENTRY

# modprobe -S 6.1.0-57-amd64 --show-depends -a virtio_pci virtio_blk ext4 (abridged), with a built-in.
SHOW_DEPENDS = """\
insmod /lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio_ring.ko
insmod /lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio.ko
insmod /lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio_pci.ko
insmod /lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio_ring.ko
insmod /lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio.ko
insmod /lib/modules/6.1.0-57-amd64/kernel/drivers/block/virtio_blk.ko
builtin crc32c
insmod /lib/modules/6.1.0-57-amd64/kernel/fs/jbd2/jbd2.ko debug=0
insmod /lib/modules/6.1.0-57-amd64/kernel/fs/ext4/ext4.ko.xz
"""


def test_modules_load_after_their_dependencies_each_once() -> None:
    order = module_order(SHOW_DEPENDS)
    assert [module_file_name(path) for path in order] == [
        "virtio_ring.ko",
        "virtio.ko",
        "virtio_pci.ko",
        "virtio_blk.ko",
        "jbd2.ko",
        "ext4.ko",
    ]
    assert order[0] == "/lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio_ring.ko"


@pytest.mark.parametrize(
    "output", ["modprobe: FATAL: Module virtio_nope not found", "insmod relative/path.ko", "insmod"]
)
def test_unexpected_modprobe_output_is_an_error(output: str) -> None:
    with pytest.raises(InvalidVmSpec, match="line 1"):
        module_order(output)


def test_module_order_of_the_real_modprobe() -> None:
    release = next(Path("/lib/modules").iterdir()).name
    done = subprocess.run(
        ["modprobe", "-C", "/dev/null", "-S", release, "--show-depends", "-a", "virtio_blk", "ext4"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    names = [module_file_name(p) for p in module_order(done.stdout)]
    assert names.index("virtio.ko") < names.index("virtio_blk.ko")
    assert names.index("jbd2.ko") < names.index("ext4.ko")
    assert len(names) == len(set(names))


def read_newc(archive: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """An independent reader: (name, mode, data, rdev) of each entry up to the trailer."""
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = []
    offset = 0
    while True:
        header = archive[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_end = offset + 110 + namesize
        name = archive[offset + 110 : name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        data = archive[data_start : data_start + size]
        offset = data_start + size + (-(data_start + size) % 4)
        if name == "TRAILER!!!":
            assert offset == len(archive)
            return entries
        entries.append((name, mode, data, rdev))


names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12)


@given(st.dictionaries(names, st.binary(max_size=300), min_size=1, max_size=8))
def test_newc_archive_reads_back(files: dict[str, bytes]) -> None:
    entries = [ImageFile(f"d/{name}", data=data, mode=0o640) for name, data in files.items()]
    image = [ImageFile("d", Kind.DIRECTORY, 0o755), *entries]
    read = read_newc(newc_archive(image))
    assert read[0] == ("d", 0o040755, b"", (0, 0))
    assert read[1:] == [(f"d/{name}", 0o100640, data, (0, 0)) for name, data in files.items()]


def test_newc_archive_is_what_cpio_lists(tmp_path: Path) -> None:
    image = [
        ImageFile("bin", Kind.DIRECTORY, 0o755),
        ImageFile("bin/busybox", data=b"x" * 1001, mode=0o755),
        ImageFile("bin/sh", Kind.SYMLINK, 0o777, target="/bin/busybox"),
        ImageFile("dev", Kind.DIRECTORY, 0o755),
        ImageFile("dev/console", Kind.CHAR_DEVICE, 0o600, device=(5, 1)),
    ]
    archive = gzip_archive(newc_archive(image))
    assert archive == gzip_archive(newc_archive(image)), "the same inputs must give the same bytes"
    listing = subprocess.run(
        ["busybox", "cpio", "-t", "-v"],
        input=gzip.decompress(archive),
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    lines = listing.splitlines()
    assert [line.split()[-1] if "->" not in line else line.split()[-3] for line in lines] == [
        "bin",
        "bin/busybox",
        "bin/sh",
        "dev",
        "dev/console",
    ]
    assert lines[4].startswith("crw-------")
    assert "bin/sh -> /bin/busybox" in lines[2]
    assert read_newc(gzip.decompress(archive))[4] == ("dev/console", 0o020600, b"", (5, 1))


@pytest.mark.parametrize("path", ["", "/abs", "twice"])
def test_newc_rejects_bad_paths(path: str) -> None:
    image = [ImageFile("twice"), ImageFile(path)]
    with pytest.raises(InvalidVmSpec):
        newc_archive(image)


def tiny_elf(notes: list[tuple[bytes, int, bytes]]) -> bytes:
    """A little-endian ELF64 with one PT_NOTE segment holding ``notes``."""
    body = b""
    for name, kind, descriptor in notes:
        padded_name = name + b"\0" * (-len(name) % 4)
        padded_descriptor = descriptor + b"\0" * (-len(descriptor) % 4)
        body += struct.pack("<III", len(name), len(descriptor), kind) + padded_name + padded_descriptor
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)  # e_phentsize, e_phnum
    program = struct.pack("<IIQQQQQQ", 4, 4, 120, 0, 0, len(body), len(body), 4)
    return bytes(header) + program + body


def test_the_pvh_entry_note_is_found() -> None:
    pvh = tiny_elf([(b"Linux\0", 6, b"6.1\0"), (b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, b"\x50\x08\x00\x01")])
    assert elf_notes(pvh)[1] == ("Xen", XEN_ELFNOTE_PHYS32_ENTRY, b"\x50\x08\x00\x01")
    assert has_pvh_entry(pvh)
    assert not has_pvh_entry(tiny_elf([(b"Xen\0", 5, b"xen-3.0\0")]))
    assert not has_pvh_entry(b"MZ not an elf" + bytes(100))
    # A note that runs past its segment is not read.
    assert elf_notes(tiny_elf([(b"Xen\0", 18, b"abcd")])[:-2]) == []


@pytest.mark.parametrize(
    "compress",
    [
        lambda data: lzma.compress(data, format=lzma.FORMAT_XZ),
        gzip.compress,
        lambda data: zstandard.ZstdCompressor().compress(data),
    ],
)
def test_the_kernel_is_extracted_from_a_bzimage(compress: Callable[[bytes], bytes]) -> None:
    elf = tiny_elf([(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, b"\0\0\0\1")])
    # A decoy magic number before the payload (as setup code may hold) must not stop the search.
    bzimage = b"MZ" + bytes(500) + b"\xfd7zXZ\x00garbage" + compress(elf) + b"\x00" * 300
    assert extract_vmlinux(bzimage) == elf
    assert extract_vmlinux(b"MZ" + bytes(1000)) is None
