"""Cross-checks of Overland's VHD code with qemu-img and qemu-io, a VHD implementation nobody here wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from services.replica.vhd import (
    DiskType,
    DynamicDisk,
    create_differencing,
    create_dynamic,
    create_fixed,
    open_disk,
    read_footer,
)

pytestmark = pytest.mark.qemu

MIB = 1024 * 1024


def qemu(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout


def info(path: Path) -> dict[str, object]:
    return json.loads(qemu("qemu-img", "info", "-f", "vpc", "--output=json", str(path)))


def make_expected(path: Path, size: int, writes: list[tuple[int, bytes]]) -> Path:
    data = bytearray(size)
    for offset, chunk in writes:
        data[offset : offset + len(chunk)] = chunk
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("options", "kind", "size"),
    [
        ([], DiskType.DYNAMIC, 10514432),  # qemu rounds 10 MiB up to CHS 301/4/17
        (["-o", "subformat=fixed"], DiskType.FIXED, 10514432),
        (["-o", "force_size=on"], DiskType.DYNAMIC, 10 * MIB),
        (["-o", "subformat=fixed,force_size=on"], DiskType.FIXED, 10 * MIB),
    ],
)
def test_images_made_by_qemu_read_back(options: list[str], kind: DiskType, size: int, tmp_path: Path) -> None:
    path = tmp_path / "q.vhd"
    qemu("qemu-img", "create", "-q", "-f", "vpc", *options, str(path), "10M")
    qemu("qemu-io", "-f", "vpc", "-c", "write -P 0xab 1M 64k", "-c", "write -P 0x5c 5242000 3000", str(path))
    footer = read_footer(path)
    assert footer is not None
    assert footer.disk_type is kind
    disk = open_disk(path)
    assert disk.virtual_size == size == info(path)["virtual-size"]
    assert disk.read(MIB, 64 * 1024) == b"\xab" * 64 * 1024
    assert disk.read(5242000, 3000) == b"\x5c" * 3000
    assert disk.read(0, MIB) == bytes(MIB)
    assert disk.read(MIB + 64 * 1024, 1000) == bytes(1000)
    disk.close()


def test_writes_by_overland_into_a_qemu_image_are_read_by_qemu(tmp_path: Path) -> None:
    path = tmp_path / "q.vhd"
    qemu("qemu-img", "create", "-q", "-f", "vpc", str(path), "8M")
    disk = open_disk(path, writable=True)
    assert isinstance(disk, DynamicDisk)
    size = disk.virtual_size
    writes = [(3 * MIB + 17, b"\x42" * 70000), (7 * MIB, b"\x99" * 512)]
    for offset, data in writes:
        disk.write(offset, data)
    disk.close()
    expected = make_expected(tmp_path / "expected.raw", size, writes)
    qemu("qemu-img", "compare", "-f", "vpc", "-F", "raw", str(path), str(expected))
    qemu("qemu-io", "-f", "vpc", "-c", f"read -P 0x42 {3 * MIB + 17} 70000", str(path))


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_images_made_by_overland_pass_qemu_info_and_compare(kind: str, tmp_path: Path) -> None:
    size = 6 * MIB + 512 * 3  # not a CHS multiple: qemu must trust current_size
    path = tmp_path / "o.vhd"
    if kind == "fixed":
        create_fixed(path, size)
    else:
        create_dynamic(path, size)
    writes = [(0, b"\x01" * 4096), (2 * MIB - 100, b"\x02" * 200), (size - 512, b"\x03" * 512)]
    disk = open_disk(path, writable=True)
    for offset, data in writes:
        disk.write(offset, data)
    disk.close()
    details = info(path)
    assert details["format"] == "vpc"
    assert details["virtual-size"] == size
    expected = make_expected(tmp_path / "expected.raw", size, writes)
    qemu("qemu-img", "compare", "-f", "vpc", "-F", "raw", str(path), str(expected))
    # And the other way round: what qemu writes into our image, we read.
    qemu("qemu-io", "-f", "vpc", "-c", "write -P 0x77 4M 8k", str(path))
    assert open_disk(path).read(4 * MIB, 8192) == b"\x77" * 8192


def test_differencing_chain_matches_the_expected_content(tmp_path: Path) -> None:
    size = 4 * MIB
    parent = create_dynamic(tmp_path / "parent.vhd", size)
    disk = open_disk(parent, writable=True)
    disk.write(0, b"\x10" * MIB)
    disk.close()
    child = create_differencing(tmp_path / "child.vhd", parent)
    disk = open_disk(child, writable=True)
    disk.write(1000, b"\x20" * 3000)
    disk.write(3 * MIB, b"\x30" * 4096)
    flattened = tmp_path / "flat.raw"
    flattened.write_bytes(disk.read(0, size))
    disk.close()
    expected = make_expected(
        tmp_path / "expected.raw",
        size,
        [(0, b"\x10" * MIB), (1000, b"\x20" * 3000), (3 * MIB, b"\x30" * 4096)],
    )
    qemu("qemu-img", "compare", "-f", "raw", "-F", "raw", str(flattened), str(expected))
    # qemu has no VHD parent support; it must still accept the child's structure as a valid vpc image.
    assert info(child)["virtual-size"] == size
    qemu("qemu-img", "compare", "-f", "vpc", "-F", "vpc", str(parent), str(parent))


def test_qemu_convert_of_our_dynamic_disk_is_sparse_and_equal(tmp_path: Path) -> None:
    path = create_dynamic(tmp_path / "o.vhd", 64 * MIB)
    disk = open_disk(path, writable=True)
    disk.write(40 * MIB + 3, b"payload" * 1000)
    disk.close()
    out = tmp_path / "out.raw"
    qemu("qemu-img", "convert", "-f", "vpc", "-O", "raw", str(path), str(out))
    assert out.read_bytes()[40 * MIB + 3 : 40 * MIB + 3 + 7000] == b"payload" * 1000
    assert open_disk(path).allocated_ranges() == [(40 * MIB, 2 * MIB)]
