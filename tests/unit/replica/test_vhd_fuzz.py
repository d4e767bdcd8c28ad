"""Malformed VHD images: each is refused with a typed ``VhdError`` saying what is wrong and where, or
opened reading exactly what the intact image held; never a crash, a huge allocation, a write, or a
silent fallback to raw."""

from __future__ import annotations

import functools
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition, InvalidArgument
from services.replica.vhd import (
    BlockDevice,
    DiskFormat,
    FileDevice,
    VhdCorrupt,
    VhdDamaged,
    VhdError,
    VhdParentError,
    create_differencing,
    create_dynamic,
    create_fixed,
    open_disk,
)
from services.replica.vhd.check import find_footer, load_layout
from services.replica.vhd.dynamic import DynamicHeader, ParentLocator, decode_header, encode_locator_path
from services.replica.vhd.footer import DiskType, Footer, decode_footer

SIZE = 256 * 1024
BLOCK = 64 * 1024
SPAN = 512 + BLOCK  # a block's sector bitmap and data
BAT = 1536  # create_dynamic's layout: footer copy, header at 512, BAT at 1536
FIRST_BLOCK = 2048
# Python allocations any check may make: far below what an absurd size field would ask for.
ALLOCATION_BUDGET = 8 * 1024 * 1024
io_settings = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def content() -> bytearray:
    """What ``dynamic_image`` holds: blocks 0 and 2 written, 1 and 3 never allocated."""
    model = bytearray(SIZE)
    model[0:5000] = b"\x01" * 5000
    model[2 * BLOCK + 7 : 2 * BLOCK + 107] = b"\x02" * 100
    return model


def dynamic_image(folder: Path, name: str = "d.vhd") -> Path:
    path = create_dynamic(folder / name, SIZE, block_size=BLOCK)
    disk = open_disk(path, writable=True)
    model = content()
    disk.write(0, model[0:5000])
    disk.write(2 * BLOCK + 7, model[2 * BLOCK + 7 : 2 * BLOCK + 107])
    disk.close()
    return path


def fixed_image(folder: Path) -> Path:
    path = create_fixed(folder / "f.vhd", SIZE)
    disk = open_disk(path, writable=True)
    disk.write(0, content())
    disk.close()
    return path


def differencing_image(folder: Path) -> Path:
    """A child over ``dynamic_image`` that rewrote 4 KiB of block 2; reads as ``child_content``."""
    child = create_differencing(folder / "c.vhd", dynamic_image(folder, "p.vhd"))
    disk = open_disk(child, writable=True)
    disk.write(2 * BLOCK, b"\x03" * 4096)
    disk.close()
    return child


def child_content() -> bytearray:
    model = content()
    model[2 * BLOCK : 2 * BLOCK + 4096] = b"\x03" * 4096
    return model


@dataclass(frozen=True)
class Kind:
    make: Callable[[Path], Path]
    model: Callable[[], bytearray]


KINDS = {
    "fixed": Kind(fixed_image, content),
    "dynamic": Kind(dynamic_image, content),
    "differencing": Kind(differencing_image, child_content),
}


@contextmanager
def allocation_budget() -> Iterator[None]:
    """No check may allocate in proportion to a size field: the Python heap's peak stays small."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < ALLOCATION_BUDGET, f"opening allocated {peak} bytes"


def outcome(path: Path, expected: bytearray, *, exact: bool = True) -> VhdError | None:
    """Open ``path`` for writing: refused with a ``VhdError`` (returned) that names the file, the image
    untouched; or opened as a VHD of the intact image's size whose every byte reads (exactly the
    intact image's bytes with ``exact``: a damaged pointer or bitmap bit that still describes a sound
    layout changes what reads back, and nothing in the format can tell). Anything else fails."""
    before = path.read_bytes()
    with allocation_budget():
        opened = attempt(lambda: open_disk(path, writable=True))
    if isinstance(opened, VhdError):
        assert path.read_bytes() == before, "a refused image must not be written"
        if isinstance(opened, VhdCorrupt):
            assert isinstance(opened, InvalidArgument)
            assert opened.path is not None
            assert str(opened.path) in opened.message
            if opened.fault is not None:
                assert " at byte " in opened.message
        return opened
    disk = opened
    try:
        assert not isinstance(disk, FileDevice) or path.name.startswith("f"), "a VHD read as raw"
        if exact:
            assert disk.virtual_size == len(expected), "an accepted image keeps its size"
            assert disk.read(0, disk.virtual_size) == expected
        else:
            disk.read(0, disk.virtual_size)
    finally:
        disk.close()
    return None


def attempt(call: Callable[[], BlockDevice]) -> BlockDevice | VhdError:
    """What ``call`` returns, or the ``VhdError`` it raised (anything else propagates: a crash)."""
    try:
        return call()
    except VhdError as error:
        return error


def assert_refused(path: Path, field: str, *, model: bytearray | None = None) -> VhdCorrupt:
    error = outcome(path, model if model is not None else content())
    assert isinstance(error, VhdCorrupt), f"{path.name} was not refused as corrupt: {error!r}"
    assert error.fault is not None
    assert error.fault.field.startswith(field), error.message
    return error


def rewrite_footer(path: Path, edit: Callable[[Footer], Footer], *, copy: bool = True) -> None:
    data = bytearray(path.read_bytes())
    footer = edit(decode_footer(bytes(data[-512:]))).encode()
    if copy:
        data[:512] = footer
    data[-512:] = footer
    path.write_bytes(bytes(data))


def rewrite_header(path: Path, edit: Callable[[DynamicHeader], DynamicHeader]) -> None:
    data = bytearray(path.read_bytes())
    data[512:1536] = edit(decode_header(bytes(data[512:1536]))).encode()
    path.write_bytes(bytes(data))


def set_bat(path: Path, index: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, BAT + 4 * index, value)
    path.write_bytes(bytes(data))


def bat_entry(path: Path, index: int) -> int:
    return int(struct.unpack_from(">I", path.read_bytes(), BAT + 4 * index)[0])


# ---- not a VHD: refused unless raw is asked for ---------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 512, 4096, 1 << 20])
def test_a_file_that_is_not_a_vhd_is_refused_unless_raw_is_asked_for(size: int, tmp_path: Path) -> None:
    path = tmp_path / "plain.img"
    path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    error = assert_refused(path, "footer", model=bytearray(size))
    assert "--format raw" in error.message
    if size:
        raw = open_disk(path, writable=True, fmt=DiskFormat.RAW)
        assert raw.virtual_size == size
        raw.close()


def test_the_cut_footer_of_a_fixed_disk_is_refused_not_read_as_raw(tmp_path: Path) -> None:
    # The case: a 64 MiB fixed VHD cut to 32 MiB arrived at the DR site as a 32 MiB raw disk.
    path = create_fixed(tmp_path / "big.vhd", 64 * 1024 * 1024)
    with path.open("r+b") as file:
        file.truncate(32 * 1024 * 1024)
    error = assert_refused(path, "footer cookie", model=bytearray(64 * 1024 * 1024))
    assert error.fault is not None
    assert error.fault.offset == 32 * 1024 * 1024 - 512


def test_a_fixed_disk_whose_file_does_not_match_its_size_is_refused(tmp_path: Path) -> None:
    path = fixed_image(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-512] + bytes(4096) + data[-512:])
    error = assert_refused(path, "fixed disk data")
    assert "bytes the footer does not count" in error.message
    path.write_bytes(data[: SIZE - 4096] + data[-512:])
    assert "truncated" in assert_refused(path, "fixed disk data").message


# ---- truncation at every interesting offset --------------------------------------------------------


def interesting_offsets(path: Path) -> list[int]:
    """Every structure's first and last byte, and one past it: footer copy, header, BAT, each
    allocated block's bitmap and data, the footer."""
    size = path.stat().st_size
    points = {
        0,
        1,
        511,
        512,
        513,
        1535,
        1536,
        1537,
        2047,
        2048,
        2049,
        size - 513,
        size - 512,
        size - 511,
        size - 1,
    }
    data = path.read_bytes()
    if data.startswith(b"conectix"):
        table = int(struct.unpack_from(">Q", data, 512 + 16)[0])
        for index in range(SIZE // BLOCK):
            (entry,) = struct.unpack_from(">I", data, table + 4 * index)
            if entry != 0xFFFFFFFF:
                start = entry * 512
                points |= {
                    start,
                    start + 1,
                    start + 511,
                    start + 512,
                    start + 513,
                    start + SPAN - 1,
                    start + SPAN,
                }
    return sorted(p for p in points if 0 <= p < size)


@pytest.mark.parametrize("kind", list(KINDS))
def test_truncation_at_every_interesting_offset_is_refused_or_harmless(kind: str, tmp_path: Path) -> None:
    path = KINDS[kind].make(tmp_path)
    original = path.read_bytes()
    for keep in interesting_offsets(path):
        path.write_bytes(original[:keep])
        error = outcome(path, KINDS[kind].model())
        # A cut into the data is refused; a cut into the footer loses nothing (a dynamic disk has the
        # footer's copy at offset 0), so it opens with every byte intact, or is refused too.
        if kind == "fixed" or keep < len(original) - 512:
            assert isinstance(error, VhdCorrupt), f"cut to {keep} bytes and opened"


@io_settings
@given(keep=st.integers(min_value=0, max_value=3 * SPAN + 4096), kind=st.sampled_from(list(KINDS)))
def test_truncation_anywhere_is_refused_or_harmless(
    keep: int, kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = KINDS[kind].make(tmp_path_factory.mktemp("cut"))
    data = path.read_bytes()
    path.write_bytes(data[: min(keep, len(data))])
    outcome(path, KINDS[kind].model())


# ---- flipped bytes in each structure --------------------------------------------------------------


def test_bad_cookies_in_both_footers(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[0:8] = b"conectiX"
    data[-512:-504] = b"conectiX"
    path.write_bytes(bytes(data))
    assert_refused(path, "footer cookie")


def test_bad_checksum_in_both_footers(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[70] ^= 1
    data[-512 + 70] ^= 1
    path.write_bytes(bytes(data))
    error = assert_refused(path, "footer checksum")
    assert error.fault is not None
    assert error.fault.offset == len(data) - 512 + 64


def test_torn_tail_footer_falls_back_to_the_copy(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[-512 + 70] ^= 1
    path.write_bytes(bytes(data))
    assert outcome(path, content()) is None


def test_bad_header_checksum(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    data = bytearray(path.read_bytes())
    data[512 + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    error = assert_refused(path, "dynamic header checksum")
    assert error.fault is not None
    assert error.fault.offset == 512 + 36


def allocated(path: Path) -> list[int]:
    """The byte offsets of the allocated blocks (their sector bitmaps), in BAT order."""
    data = path.read_bytes()
    entries = struct.unpack_from(f">{SIZE // BLOCK}I", data, BAT)
    return [entry * 512 for entry in entries if entry != 0xFFFFFFFF]


REGIONS: dict[str, Callable[[Path], tuple[int, int]]] = {
    "footer copy": lambda _path: (0, 512),
    "dynamic header": lambda _path: (512, 1024),
    "BAT": lambda _path: (BAT, 512),
    "first bitmap": lambda path: (allocated(path)[0], 512),
    "last bitmap": lambda path: (allocated(path)[-1], 512),
    "footer": lambda path: (path.stat().st_size - 512, 512),
}


def flip(path: Path, region: str, flips: list[tuple[int, int]]) -> None:
    data = bytearray(path.read_bytes())
    start, length = REGIONS[region](path)
    for position, delta in flips:
        index = start + position % length
        data[index] = (data[index] + delta) % 256
    path.write_bytes(bytes(data))


@io_settings
@given(
    region=st.sampled_from(list(REGIONS)),
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1023), st.integers(min_value=1, max_value=255)),
        min_size=1,
        max_size=4,
    ),
    differencing=st.booleans(),
)
def test_flipped_bytes_in_any_structure_are_refused_or_read_without_a_crash(
    region: str, flips: list[tuple[int, int]], differencing: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("flips")
    path = differencing_image(folder) if differencing else dynamic_image(folder)
    flip(path, region, flips)
    outcome(path, child_content() if differencing else content(), exact=False)


@io_settings
@given(
    region=st.sampled_from(list(REGIONS)),
    position=st.integers(min_value=0, max_value=1023),
    delta=st.integers(min_value=1, max_value=255),
    differencing=st.booleans(),
)
def test_one_flipped_byte_is_refused_or_changes_nothing_the_checksums_cover(
    region: str, position: int, delta: int, differencing: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("flip")
    path = differencing_image(folder) if differencing else dynamic_image(folder)
    flip(path, region, [(position, delta)])
    model = child_content() if differencing else content()
    if region == "dynamic header":
        assert isinstance(outcome(path, model), VhdCorrupt)
    elif region in {"footer", "footer copy"}:
        # One footer damaged, the other intact: the spec keeps the copy for exactly this.
        assert outcome(path, model) is None
    else:
        outcome(path, model, exact=False)


@settings(max_examples=300, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=2 * 4096), st.integers(min_value=1, max_value=255)),
        min_size=1,
        max_size=8,
    ),
    cut=st.integers(min_value=0, max_value=4096),
)
def test_the_pure_checks_take_any_bytes(flips: list[tuple[int, int]], cut: int) -> None:
    # The checks over an in-memory image (no files): every input ends in a Footer or a VhdCorrupt.
    data = bytearray(image_bytes())
    for position, delta in flips:
        data[position % len(data)] = (data[position % len(data)] + delta) % 256
    image = bytes(data[: len(data) - cut])

    def read(offset: int, length: int) -> bytes:
        assert offset >= 0, "read before the file"
        assert offset + length <= len(image), "read past the end of the file"
        return image[offset : offset + length]

    def check() -> None:
        footer = find_footer(read, len(image))
        if footer.disk_type is not DiskType.FIXED:
            load_layout(read, footer, len(image))

    with allocation_budget():
        refused = attempt_check(check)
    if refused is not None:
        assert refused.fault is not None
        assert refused.fault.offset >= 0


def attempt_check(check: Callable[[], None]) -> VhdCorrupt | None:
    try:
        check()
    except VhdCorrupt as error:
        return error
    return None


@functools.cache
def image_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return dynamic_image(Path(folder)).read_bytes()


# ---- absurd sizes and pointers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"current_size": 2**63}, "footer current size"),
        ({"current_size": 2**64 - 512}, "footer current size"),
        ({"current_size": SIZE + 100}, "footer current size"),
        ({"data_offset": 2**40}, "dynamic header"),
        ({"data_offset": 2**63}, "dynamic header"),
        ({"data_offset": 0xFFFFFFFFFFFFFE00}, "dynamic header"),
    ],
)
def test_absurd_footer_fields(change: dict[str, int], field: str, tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    rewrite_footer(path, lambda footer: replace(footer, **change))  # type: ignore[arg-type]
    assert_refused(path, field)


def test_size_larger_than_the_bat(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    rewrite_footer(path, lambda footer: replace(footer, current_size=SIZE * 4))
    assert_refused(path, "dynamic header max table entries")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        *[
            ({"max_table_entries": n}, "dynamic header max table entries")
            for n in (2**32 - 1, 2**31, 10**7, 129)
        ],
        *[({"block_size": n}, "dynamic header block size") for n in (3 * 1024 * 1024, 2**31, 512, 0)],
        ({"table_offset": 2**40}, "BAT"),
        ({"table_offset": 2**63 - 512}, "BAT"),
    ],
)
def test_absurd_header_fields(change: dict[str, int], field: str, tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    rewrite_header(path, lambda header: replace(header, **change))  # type: ignore[arg-type]
    assert_refused(path, field)


def test_a_tiny_block_size_for_a_huge_disk_is_refused_before_reading_its_table(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    rewrite_footer(path, lambda footer: replace(footer, current_size=2000 * 1024**3))
    rewrite_header(
        path, lambda header: replace(header, block_size=4096, max_table_entries=2000 * 1024**3 // 4096)
    )
    assert_refused(path, "dynamic header block size")


def test_table_over_the_header_is_refused(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    rewrite_header(path, lambda header: replace(header, table_offset=1024))
    error = assert_refused(path, "dynamic header table offset")
    assert "clear of the dynamic header" in error.message


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (0xFFFFFFFE, "ending by the data end"),  # past the end of the file
        (0x7FFFFFFF, "ending by the data end"),
        (-1, "ending by the data end"),  # into the footer: replaced below by the footer's sector
        (0, "clear of the footer copy"),
        (1, "clear of the dynamic header"),
        (BAT // 512, "clear of the BAT"),
    ],
)
def test_bat_entries_pointing_outside_the_data_area(entry: int, why: str, tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    if entry == -1:
        entry = (path.stat().st_size - 512) // 512
    set_bat(path, 1, entry)
    error = assert_refused(path, "BAT entry 1")
    assert why in error.message
    assert error.fault is not None
    assert error.fault.offset == BAT + 4


def test_overlapping_blocks(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    set_bat(path, 1, bat_entry(path, 0) + 1)
    assert "clear of block 0" in assert_refused(path, "BAT entry 1").message
    set_bat(path, 1, bat_entry(path, 0))
    assert "clear of block 0" in assert_refused(path, "BAT entry").message


def test_allocated_entries_past_the_end_of_the_disk(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    rewrite_footer(path, lambda footer: replace(footer, current_size=2 * BLOCK))
    rewrite_header(path, lambda header: replace(header, max_table_entries=4))
    assert (
        "past the end of the disk"
        in assert_refused(path, "BAT entry 2", model=content()[: 2 * BLOCK]).message
    )


def test_a_parent_locator_past_the_end_is_refused(tmp_path: Path) -> None:
    path = differencing_image(tmp_path)
    rewrite_header(
        path,
        lambda header: replace(
            header, locators=(ParentLocator(b"W2ru", 2**40, 100, 1), *header.locators[1:])
        ),
    )
    assert_refused(path, "parent locator 0 data", model=child_content())


# ---- parents ------------------------------------------------------------------------------------


def point_at(child: Path, parent: Path) -> None:
    """Make ``child`` name ``parent`` (by unique id and relative locator) as its parent."""
    parent_id = decode_footer(parent.read_bytes()[-512:]).unique_id
    data = encode_locator_path(b"W2ru", parent.name)
    rewrite_header(
        child,
        lambda header: replace(
            header,
            parent_unique_id=parent_id,
            locators=(
                ParentLocator(b"W2ru", header.locators[0].data_offset, len(data), 1),
                *header.locators[1:],
            ),
        ),
    )
    raw = bytearray(child.read_bytes())
    offset = decode_header(bytes(raw[512:1536])).locators[0].data_offset
    raw[offset : offset + len(data)] = data
    child.write_bytes(bytes(raw))


def test_a_parent_chain_that_loops_is_refused(tmp_path: Path) -> None:
    base = dynamic_image(tmp_path, "base.vhd")
    a = create_differencing(tmp_path / "a.vhd", base)
    b = create_differencing(tmp_path / "b.vhd", a)
    point_at(a, b)  # b -> a -> b -> ...
    with pytest.raises(VhdParentError, match="loops"):
        open_disk(b)


def test_a_disk_that_is_its_own_parent_is_refused(tmp_path: Path) -> None:
    a = create_differencing(tmp_path / "a.vhd", dynamic_image(tmp_path, "base.vhd"))
    point_at(a, a)
    with pytest.raises(VhdParentError, match="loops") as raised:
        open_disk(a, writable=True)
    assert isinstance(raised.value, FailedPrecondition)


def test_a_corrupt_parent_is_refused_naming_the_parent(tmp_path: Path) -> None:
    child = differencing_image(tmp_path)
    parent = tmp_path / "p.vhd"
    data = bytearray(parent.read_bytes())
    data[512 + 30] ^= 0xFF  # the parent's dynamic header
    parent.write_bytes(bytes(data))
    error = assert_refused(child, "dynamic header checksum", model=child_content())
    assert error.path == parent


# ---- an image damaged while open ---------------------------------------------------------------


def test_a_block_cut_off_while_open_is_a_failed_precondition(tmp_path: Path) -> None:
    path = dynamic_image(tmp_path)
    disk = open_disk(path)
    assert disk.read(0, 10) == b"\x01" * 10
    with path.open("r+b") as file:
        file.truncate(FIRST_BLOCK + SPAN + 100)  # block 2 loses its data, block 0 keeps its own
    try:
        with pytest.raises(VhdDamaged) as raised:
            disk.read(2 * BLOCK, 4096)
        assert raised.value.code.name == "FAILED_PRECONDITION"
        assert isinstance(raised.value, VhdCorrupt)
        assert str(path) in raised.value.message
        assert disk.read(0, 10) == b"\x01" * 10
    finally:
        disk.close()
