"""Fixed, dynamic and differencing VHD files against an in-memory model of the disk's bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.replica.vhd import (
    DeviceReadOnly,
    DiskFormat,
    DiskType,
    DynamicDisk,
    FileDevice,
    VhdCorrupt,
    VhdInvalid,
    VhdParentError,
    create_differencing,
    create_dynamic,
    create_fixed,
    open_disk,
    read_footer,
)

SIZE = 3 * 64 * 1024 + 4096  # three 64 KiB blocks and a partial fourth
BLOCK = 64 * 1024

writes = st.lists(
    st.tuples(st.integers(min_value=0, max_value=SIZE - 1), st.binary(min_size=1, max_size=70000)).map(
        lambda w: (w[0], w[1][: SIZE - w[0]])
    ),
    max_size=8,
)
settings_io = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def apply(model: bytearray, offset: int, data: bytes) -> None:
    model[offset : offset + len(data)] = data


def make(kind: str, folder: Path) -> Path:
    if kind == "fixed":
        return create_fixed(folder / "disk.vhd", SIZE)
    return create_dynamic(folder / "disk.vhd", SIZE, block_size=BLOCK)


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
@settings_io
@given(ops=writes)
def test_writes_read_back_before_and_after_reopen(
    kind: str, ops: list[tuple[int, bytes]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp(kind)
    path = make(kind, folder)
    model = bytearray(SIZE)
    disk = open_disk(path, writable=True)
    for offset, data in ops:
        disk.write(offset, data)
        apply(model, offset, data)
    assert disk.read(0, SIZE) == model
    disk.close()
    reopened = open_disk(path)
    assert reopened.virtual_size == SIZE
    assert reopened.read(0, SIZE) == model
    # allocated_ranges must cover every non-zero byte.
    covered = bytearray(SIZE)
    for start, length in reopened.allocated_ranges():
        covered[start : start + length] = model[start : start + length]
    assert covered == model
    reopened.close()


@settings_io
@given(base=writes, child_ops=writes)
def test_differencing_reads_fall_through_to_the_parent(
    base: list[tuple[int, bytes]],
    child_ops: list[tuple[int, bytes]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("diff")
    parent_path = create_dynamic(folder / "parent.vhd", SIZE, block_size=BLOCK)
    model = bytearray(SIZE)
    parent = open_disk(parent_path, writable=True)
    for offset, data in base:
        parent.write(offset, data)
        apply(model, offset, data)
    parent.close()
    parent_bytes = (folder / "parent.vhd").read_bytes()
    child_path = create_differencing(folder / "child.vhd", parent_path)
    child = open_disk(child_path, writable=True)
    assert isinstance(child, DynamicDisk)
    assert child.footer.disk_type is DiskType.DIFFERENCING
    for offset, data in child_ops:
        child.write(offset, data)
        apply(model, offset, data)
    assert child.read(0, SIZE) == model
    child.close()
    assert (folder / "parent.vhd").read_bytes() == parent_bytes, "the parent must never be written"
    assert open_disk(child_path).read(0, SIZE) == model


def test_differencing_partial_sector_write_keeps_the_parent_bytes(tmp_path: Path) -> None:
    parent_path = create_dynamic(tmp_path / "p.vhd", SIZE, block_size=BLOCK)
    parent = open_disk(parent_path, writable=True)
    parent.write(0, b"\x11" * 1024)
    parent.close()
    child = open_disk(create_differencing(tmp_path / "c.vhd", parent_path), writable=True)
    child.write(100, b"\x22" * 10)
    assert child.read(0, 1024) == b"\x11" * 100 + b"\x22" * 10 + b"\x11" * 914
    child.close()


def test_parent_is_found_relative_after_moving_the_pair(tmp_path: Path) -> None:
    first = tmp_path / "a"
    first.mkdir()
    parent_path = create_dynamic(first / "p.vhd", SIZE, block_size=BLOCK)
    parent = open_disk(parent_path, writable=True)
    parent.write(5000, b"parent data")
    parent.close()
    create_differencing(first / "c.vhd", parent_path)
    moved = tmp_path / "b"
    first.rename(moved)
    assert open_disk(moved / "c.vhd").read(5000, 11) == b"parent data"


def test_wrong_parent_unique_id_is_refused(tmp_path: Path) -> None:
    parent_path = create_dynamic(tmp_path / "p.vhd", SIZE, block_size=BLOCK)
    create_differencing(tmp_path / "c.vhd", parent_path)
    os.unlink(parent_path)
    create_dynamic(parent_path, SIZE, block_size=BLOCK)  # same path, new unique id
    with pytest.raises(VhdParentError, match="not the parent"):
        open_disk(tmp_path / "c.vhd")


def test_missing_parent_is_a_clear_error(tmp_path: Path) -> None:
    parent_path = create_dynamic(tmp_path / "p.vhd", SIZE, block_size=BLOCK)
    create_differencing(tmp_path / "c.vhd", parent_path)
    os.unlink(parent_path)
    with pytest.raises(VhdParentError, match="not found"):
        open_disk(tmp_path / "c.vhd")


def test_open_disk_opens_the_named_format_and_never_guesses_raw(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x01" * 8192)
    with pytest.raises(VhdCorrupt, match="needs --format raw") as refused:
        open_disk(raw)
    assert refused.value.path == raw
    device = open_disk(raw, fmt=DiskFormat.RAW)
    assert isinstance(device, FileDevice)
    assert device.virtual_size == 8192
    device.close()
    fixed = create_fixed(tmp_path / "f.vhd", 8192)
    device = open_disk(fixed)
    assert device.virtual_size == 8192
    device.close()
    footer = read_footer(fixed)
    assert footer is not None
    assert footer.disk_type is DiskType.FIXED
    assert read_footer(raw) is None
    with pytest.raises(VhdInvalid, match="format must be one of"):
        open_disk(raw, fmt="qcow2")  # type: ignore[arg-type]


def test_read_only_devices_refuse_writes(tmp_path: Path) -> None:
    for path in (create_fixed(tmp_path / "f.vhd", 8192), create_dynamic(tmp_path / "d.vhd", 8192)):
        disk = open_disk(path)
        with pytest.raises(DeviceReadOnly):
            disk.write(0, b"x")
        disk.close()


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_ranges_outside_the_disk_are_invalid(kind: str, tmp_path: Path) -> None:
    disk = open_disk(make(kind, tmp_path), writable=True)
    with pytest.raises(VhdInvalid):
        disk.read(SIZE - 1, 2)
    with pytest.raises(VhdInvalid):
        disk.write(-1, b"x")
    with pytest.raises(VhdInvalid):
        disk.write_zeroes(SIZE, 1)
    disk.close()


def test_write_zeroes_on_dynamic_leaves_unallocated_blocks_alone(tmp_path: Path) -> None:
    path = create_dynamic(tmp_path / "d.vhd", SIZE, block_size=BLOCK)
    disk = open_disk(path, writable=True)
    size_before = path.stat().st_size
    disk.write_zeroes(0, SIZE)
    assert path.stat().st_size == size_before
    disk.write(10, b"abc")
    disk.write_zeroes(0, 100)
    assert disk.read(0, 100) == bytes(100)
    assert disk.allocated_ranges() == [(0, BLOCK)]
    disk.close()


def test_create_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(VhdInvalid):
        create_fixed(tmp_path / "a.vhd", 1000)
    with pytest.raises(VhdInvalid):
        create_dynamic(tmp_path / "b.vhd", 0)
    with pytest.raises(VhdInvalid):
        create_dynamic(tmp_path / "c.vhd", 4096, block_size=3000)


def test_raw_write_zeroes_punches_a_hole(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x01" * 8 * BLOCK)
    disk = open_disk(raw, writable=True, fmt=DiskFormat.RAW)
    disk.write_zeroes(BLOCK + 100, 4 * BLOCK)
    assert disk.read(BLOCK, 200) == b"\x01" * 100 + bytes(100)
    assert disk.read(2 * BLOCK, 3 * BLOCK) == bytes(3 * BLOCK)
    assert disk.read(5 * BLOCK + 100, 10) == b"\x01" * 10
    # The fully zeroed middle is no longer allocated (tmpfs and ext4 both punch holes).
    allocated = sum(length for _start, length in disk.allocated_ranges())
    assert allocated < 8 * BLOCK
    disk.close()


def test_parent_is_found_by_the_absolute_locator_when_only_the_child_moved(tmp_path: Path) -> None:
    parent_path = create_dynamic(tmp_path / "p.vhd", SIZE, block_size=BLOCK)
    parent = open_disk(parent_path, writable=True)
    parent.write(0, b"from the parent")
    parent.close()
    create_differencing(tmp_path / "c.vhd", parent_path)
    elsewhere = tmp_path / "deeper" / "still"
    elsewhere.mkdir(parents=True)
    (tmp_path / "c.vhd").rename(elsewhere / "c.vhd")
    assert open_disk(elsewhere / "c.vhd").read(0, 15) == b"from the parent"
