"""Malformed VHD images: each must raise a typed ``VhdError`` and never crash or write anything."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import DataLoss
from services.replica.vhd import VhdCorrupt, VhdError, create_differencing, create_dynamic, open_disk
from services.replica.vhd.dynamic import DynamicHeader, decode_header
from services.replica.vhd.footer import DiskType, Footer, decode_footer

SIZE = 256 * 1024
BLOCK = 64 * 1024


def valid_image(folder: Path) -> Path:
    path = create_dynamic(folder / "d.vhd", SIZE, block_size=BLOCK)
    disk = open_disk(path, writable=True)
    disk.write(0, b"\x01" * 5000)
    disk.write(2 * BLOCK + 7, b"\x02" * 100)
    disk.close()
    return path


def rewrite_footer(path: Path, edit: Callable[[Footer], Footer]) -> None:
    data = bytearray(path.read_bytes())
    footer = edit(decode_footer(bytes(data[-512:]))).encode()
    data[:512] = footer
    data[-512:] = footer
    path.write_bytes(bytes(data))


def rewrite_header(path: Path, edit: Callable[[DynamicHeader], DynamicHeader]) -> None:
    data = bytearray(path.read_bytes())
    data[512:1536] = edit(decode_header(bytes(data[512:1536]))).encode()
    path.write_bytes(bytes(data))


def set_bat(path: Path, index: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, 1536 + 4 * index, value)
    path.write_bytes(bytes(data))


def assert_refused(path: Path, match: str) -> None:
    before = path.read_bytes()
    with pytest.raises(VhdCorrupt, match=match) as raised:
        open_disk(path, writable=True)
    assert isinstance(raised.value, DataLoss)
    assert path.read_bytes() == before


def test_bad_cookie(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[0:8] = b"conectiX"
    data[-512:-504] = b"conectiX"
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(VhdCorrupt):
        open_disk(path, fmt="vhd")
    assert path.read_bytes() == before


def test_bad_checksum_in_both_footers(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[70] ^= 1
    data[-512 + 70] ^= 1
    path.write_bytes(bytes(data))
    assert_refused(path, "checksum")


def test_torn_tail_footer_falls_back_to_the_copy(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[-512 + 70] ^= 1
    path.write_bytes(bytes(data))
    assert open_disk(path).read(0, 10) == b"\x01" * 10


def test_bad_header_checksum(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[512 + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_refused(path, "dynamic header")


@pytest.mark.parametrize("keep", [0, 100, 511, 512, 1000, 1536, 1600, 2048 + 512 + 100])
def test_truncated(keep: int, tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    path.write_bytes(path.read_bytes()[:keep])
    before = path.read_bytes()
    try:
        disk = open_disk(path, writable=True, fmt="vhd")
    except VhdError:
        assert path.read_bytes() == before
    else:
        pytest.fail(f"a VHD truncated to {keep} bytes opened as {disk!r}")


def test_bat_pointing_past_the_end(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    set_bat(path, 1, path.stat().st_size // 512 + 10)
    assert_refused(path, "past the data end")


def test_overlapping_blocks(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    data = path.read_bytes()
    (first,) = struct.unpack_from(">I", data, 1536)
    set_bat(path, 1, first + 1)
    assert_refused(path, "overlaps")


def test_block_over_the_bat(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    set_bat(path, 1, 1536 // 512)
    assert_refused(path, "overlaps")


def test_absurd_disk_size(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    rewrite_footer(path, lambda footer: replace(footer, current_size=2**60))
    assert_refused(path, "2040 GiB")


def test_size_larger_than_the_bat(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    rewrite_footer(path, lambda footer: replace(footer, current_size=SIZE * 4))
    assert_refused(path, "BAT has")


def test_absurd_table_entries(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    rewrite_header(path, lambda header: replace(header, max_table_entries=2**32 - 1))
    assert_refused(path, "BAT of")


def test_absurd_block_size(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    rewrite_header(path, lambda header: replace(header, block_size=3 * 1024 * 1024))
    assert_refused(path, "block size")


def test_header_offset_past_the_end(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    rewrite_footer(path, lambda footer: replace(footer, data_offset=2**40))
    assert_refused(path, "past the end")


def test_fixed_disk_truncated(tmp_path: Path) -> None:
    path = valid_image(tmp_path)
    rewrite_footer(
        path,
        lambda footer: replace(
            footer, disk_type=DiskType.FIXED, data_offset=0xFFFFFFFFFFFFFFFF, current_size=SIZE * 8
        ),
    )
    data = path.read_bytes()
    path.write_bytes(bytes(512) + data[512:])
    assert_refused(path, "truncated")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=4095), st.integers(min_value=1, max_value=255)),
        min_size=1,
        max_size=6,
    ),
    from_end=st.booleans(),
    differencing=st.booleans(),
)
def test_random_corruption_never_crashes(
    flips: list[tuple[int, int]], from_end: bool, differencing: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = valid_image(folder)
    if differencing:
        path = create_differencing(folder / "child.vhd", path)
    data = bytearray(path.read_bytes())
    for position, delta in flips:
        index = len(data) - 1 - (position % len(data)) if from_end else position % len(data)
        data[index] = (data[index] + delta) % 256
    path.write_bytes(bytes(data))
    try:
        disk = open_disk(path, writable=True, fmt="vhd")
    except VhdError:
        assert path.read_bytes() == bytes(data), "a refused image must not be written"
        return
    try:
        disk.read(0, disk.virtual_size)
    except VhdError:
        pass
    finally:
        disk.close()
