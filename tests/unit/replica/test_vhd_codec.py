"""Property tests of the pure VHD codecs: footer, dynamic header, BAT, sector bitmaps, CHS geometry."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.replica.vhd import VhdCorrupt
from services.replica.vhd.dynamic import (
    EMPTY_LOCATOR,
    PLATFORM_ABSOLUTE,
    PLATFORM_MACX,
    PLATFORM_RELATIVE,
    UNUSED,
    DynamicHeader,
    ParentLocator,
    all_set,
    bit_runs,
    decode_bat,
    decode_header,
    decode_locator_path,
    encode_bat,
    encode_locator_path,
    set_bits,
)
from services.replica.vhd.footer import (
    DiskType,
    Footer,
    Geometry,
    chs_geometry,
    decode_footer,
    ones_complement_checksum,
)

sizes = st.integers(min_value=1, max_value=(2040 * 1024**3) // 512).map(lambda s: s * 512)

footers = st.builds(
    Footer,
    disk_type=st.sampled_from(list(DiskType)),
    current_size=sizes,
    original_size=st.integers(min_value=0, max_value=2**64 - 1),
    geometry=st.builds(
        Geometry,
        st.integers(min_value=0, max_value=65535),
        st.integers(min_value=0, max_value=255),
        st.integers(min_value=0, max_value=255),
    ),
    data_offset=st.integers(min_value=1, max_value=2**40).map(lambda n: n * 512),
    unique_id=st.binary(min_size=16, max_size=16),
    timestamp=st.integers(min_value=0, max_value=2**32 - 1),
    saved_state=st.integers(min_value=0, max_value=1),
).map(
    lambda f: (
        Footer(**{**f.__dict__, "data_offset": 0xFFFFFFFFFFFFFFFF}) if f.disk_type is DiskType.FIXED else f
    )
)


@given(footers)
def test_footer_round_trips_and_checksum_verifies(footer: Footer) -> None:
    encoded = footer.encode()
    assert len(encoded) == 512
    assert encoded[:8] == b"conectix"
    decoded = decode_footer(encoded)
    assert decoded.encode() == encoded
    assert {k: v for k, v in decoded.__dict__.items() if k != "checksum"} == {
        k: v for k, v in footer.__dict__.items() if k != "checksum"
    }
    assert decoded.checksum == ones_complement_checksum(encoded, (64, 68))


@given(
    footers,
    st.integers(min_value=0, max_value=511),
    st.integers(min_value=1, max_value=255),
    st.integers(min_value=0, max_value=2**41).map(lambda n: n * 512),
)
def test_any_flipped_footer_byte_is_rejected_saying_where(
    footer: Footer, index: int, delta: int, at: int
) -> None:
    damaged = bytearray(footer.encode())
    damaged[index] = (damaged[index] + delta) % 256
    # Every byte is either summed into the checksum or is the checksum, so any single change is caught.
    with pytest.raises(VhdCorrupt) as raised:
        decode_footer(bytes(damaged), at)
    fault = raised.value.fault
    assert fault is not None
    assert at <= fault.offset < at + 512
    assert fault.field.startswith("footer")
    assert fault.expected != fault.found


def test_checksum_is_ones_complement_of_byte_sum() -> None:
    assert ones_complement_checksum(b"\x01\x02\x03") == 0xFFFFFFF9
    assert ones_complement_checksum(b"\x01\xff\x03", (1, 2)) == 0xFFFFFFFB


@given(st.integers(min_value=1, max_value=65535 * 16 * 255 * 2))
def test_chs_geometry_follows_the_spec_limits(total_sectors: int) -> None:
    g = chs_geometry(total_sectors * 512)
    assert g.total_sectors <= min(total_sectors, 65535 * 16 * 255)
    assert g.heads <= 16
    assert g.sectors in (17, 31, 63, 255)
    assert g.cylinders <= 65535


def test_chs_geometry_known_values() -> None:
    # qemu-img create -f vpc 10M reports 10514432 bytes: 301 cylinders, 4 heads, 17 sectors.
    assert chs_geometry(10 * 1024 * 1024) == Geometry(301, 4, 17)
    assert chs_geometry(10514432).total_sectors * 512 == 10514432
    assert chs_geometry(3 * 1024**4) == Geometry(65535, 16, 255)


headers = st.builds(
    DynamicHeader,
    table_offset=st.integers(min_value=1, max_value=2**30).map(lambda n: n * 512),
    max_table_entries=st.integers(min_value=1, max_value=2**20),
    block_size=st.integers(min_value=12, max_value=28).map(lambda e: 1 << e),
    parent_unique_id=st.binary(min_size=16, max_size=16),
    parent_timestamp=st.integers(min_value=0, max_value=2**32 - 1),
    parent_name=st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=100
    ),
    locators=st.lists(
        st.builds(
            ParentLocator,
            st.sampled_from([PLATFORM_RELATIVE, PLATFORM_ABSOLUTE, PLATFORM_MACX]),
            st.integers(min_value=0, max_value=2**40),
            st.integers(min_value=0, max_value=2**20),
            st.integers(min_value=0, max_value=2**20),
        ),
        max_size=8,
    ).map(lambda locs: tuple(locs) + (EMPTY_LOCATOR,) * (8 - len(locs))),
)


@given(headers)
def test_dynamic_header_round_trips(header: DynamicHeader) -> None:
    encoded = header.encode()
    assert len(encoded) == 1024
    assert decode_header(encoded) == header


@given(headers, st.integers(min_value=0, max_value=1023))
def test_damaged_dynamic_header_is_rejected_saying_where(header: DynamicHeader, index: int) -> None:
    damaged = bytearray(header.encode())
    damaged[index] ^= 0x5A
    with pytest.raises(VhdCorrupt) as raised:
        decode_header(bytes(damaged), 512)
    fault = raised.value.fault
    assert fault is not None
    assert 512 <= fault.offset < 512 + 1024
    assert fault.field.startswith("dynamic header")


@given(st.lists(st.one_of(st.just(UNUSED), st.integers(min_value=0, max_value=UNUSED - 1)), max_size=500))
def test_bat_round_trips_padded_to_a_sector(entries: list[int]) -> None:
    encoded = encode_bat(entries)
    assert len(encoded) % 512 == 0
    assert decode_bat(encoded, len(entries)) == entries
    assert decode_bat(encoded, len(encoded) // 4)[len(entries) :] == [UNUSED] * (
        len(encoded) // 4 - len(entries)
    )


@given(st.sets(st.integers(min_value=0, max_value=4095)), st.integers(0, 4095), st.integers(0, 4096))
def test_bit_runs_match_a_naive_bitmap(present: set[int], first: int, count: int) -> None:
    count = min(count, 4096 - first)
    bitmap = bytearray(512)
    for sector in present:
        set_bits(bitmap, sector, 1)
    runs = bit_runs(bitmap, first, count)
    expanded = [(is_set, s) for is_set, start, n in runs for s in range(start, start + n)]
    assert expanded == [(s in present, s) for s in range(first, first + count)]
    assert all_set(bitmap, 4096) == (len(present) == 4096)
    assert all(a[0] != b[0] for a, b in itertools.pairwise(runs))


def test_bitmap_bit_order_is_msb_first() -> None:
    bitmap = bytearray(2)
    set_bits(bitmap, 0, 1)
    set_bits(bitmap, 9, 1)
    assert bitmap == bytearray([0x80, 0x40])


@given(
    st.sampled_from([PLATFORM_RELATIVE, PLATFORM_ABSOLUTE, PLATFORM_MACX]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0\\"), min_size=1),
)
def test_locator_paths_round_trip(platform: bytes, path: str) -> None:
    decoded = decode_locator_path(platform, encode_locator_path(platform, path))
    assert decoded == (path.removeprefix("./") or None)


def test_windows_relative_locator_becomes_posix() -> None:
    data = ".\\dir\\parent.vhd".encode("utf-16-le")
    assert decode_locator_path(PLATFORM_RELATIVE, data) == "dir/parent.vhd"
    assert decode_locator_path(b"Wi2r", data) is None
