"""Read-only VHDX (the stretch goal) against images made and written by qemu-img and qemu-io."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.replica.vhd import (
    DeviceReadOnly,
    DiskFormat,
    VhdCorrupt,
    VhdError,
    VhdInvalid,
    VhdxDisk,
    open_disk,
)
from services.replica.vhd.vhdx import HEADER_OFFSETS, REGION_OFFSETS, crc32c

pytestmark = pytest.mark.qemu

MIB = 1024 * 1024


def qemu(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=120)


def qemu_vhdx(folder: Path, *options: str) -> Path:
    path = folder / "q.vhdx"
    qemu("qemu-img", "create", "-q", "-f", "vhdx", *options, str(path), "40M")
    qemu(
        "qemu-io", "-f", "vhdx", "-c", "write -P 0xab 1M 64k", "-c", "write -P 0x12 20971000 5000", str(path)
    )
    return path


@pytest.mark.parametrize("options", [[], ["-o", "subformat=fixed"], ["-o", "block_size=1M"]])
def test_vhdx_made_by_qemu_reads_back(options: list[str], tmp_path: Path) -> None:
    path = qemu_vhdx(tmp_path, *options)
    disk = open_disk(path)
    assert isinstance(disk, VhdxDisk)
    assert disk.virtual_size == 40 * MIB
    assert disk.read(MIB, 64 * 1024) == b"\xab" * 64 * 1024
    assert disk.read(20971000, 5000) == b"\x12" * 5000
    flat = tmp_path / "flat.raw"
    flat.write_bytes(disk.read(0, disk.virtual_size))
    qemu("qemu-img", "compare", "-f", "vhdx", "-F", "raw", str(path), str(flat))
    with pytest.raises(DeviceReadOnly):
        disk.write(0, b"x")
    disk.close()
    with pytest.raises(VhdInvalid, match="read-only"):
        open_disk(path, writable=True)


def test_one_damaged_header_or_region_table_falls_back_to_the_other(tmp_path: Path) -> None:
    path = qemu_vhdx(tmp_path)
    data = bytearray(path.read_bytes())
    for offset in (HEADER_OFFSETS[0] + 100, HEADER_OFFSETS[1] + 100, REGION_OFFSETS[0] + 40):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        assert open_disk(path).read(MIB, 4) == b"\xab" * 4
    for pair in (HEADER_OFFSETS, REGION_OFFSETS):
        damaged = bytearray(data)
        for offset in pair:
            damaged[offset + 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with pytest.raises(VhdCorrupt):
            open_disk(path)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    # 1 MiB blocks keep the file (and each example's copy of it) small.
    return qemu_vhdx(tmp_path_factory.mktemp("template"), "-o", "block_size=1M").read_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 2 * MIB), st.integers(1, 255)), min_size=1, max_size=8))
def test_corrupted_vhdx_raises_a_typed_error_or_reads(
    flips: list[tuple[int, int]], template: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("vhdx") / "fuzzed.vhdx"
    data = bytearray(template)
    for position, delta in flips:
        data[position % len(data)] = (data[position % len(data)] + delta) % 256
    path.write_bytes(bytes(data))
    try:
        disk = open_disk(path, fmt=DiskFormat.VHDX)
    except VhdError:
        assert path.read_bytes() == bytes(data)
        return
    # The flips land in the first 2 MiB (headers, regions, BAT, metadata); read what they govern.
    assert len(disk.read(0, 2 * MIB)) == 2 * MIB
    assert len(disk.read(disk.virtual_size - MIB, MIB)) == MIB
    disk.close()


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283
