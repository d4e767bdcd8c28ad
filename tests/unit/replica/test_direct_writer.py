"""The DR site's O_DIRECT writer on a real file: ordering, splitting, refusing unaligned writes, errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.replica.dr.direct import ALIGN, DirectWriter, direct_span

PAGES = 16


@given(st.integers(0, 1 << 40), st.integers(0, 1 << 24), st.sampled_from([512, 4096]))
def test_direct_span_needs_aligned_offset_and_length(offset: int, length: int, align: int) -> None:
    assert direct_span(offset, length, align) == (length > 0 and offset % align == 0 and length % align == 0)


def open_writer(path: Path, depth: int = 2, buffer_bytes: int = 2 * ALIGN) -> DirectWriter:
    path.write_bytes(bytes(PAGES * ALIGN))
    return DirectWriter(os.open(path, os.O_WRONLY | os.O_DIRECT), depth=depth, buffer_bytes=buffer_bytes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, PAGES - 1), st.integers(1, 5), st.binary(min_size=1, max_size=1)),
        max_size=12,
    )
)
def test_writes_land_in_order_like_plain_writes(tmp_path: Path, writes: list[tuple[int, int, bytes]]) -> None:
    path = tmp_path / "disk.img"
    expected = bytearray(PAGES * ALIGN)
    writer = open_writer(path)
    try:
        for page, wanted, fill in writes:
            pages = min(wanted, PAGES - page)
            data = fill * (pages * ALIGN)
            # Later writes to the same range must win, as they would through the page cache.
            assert writer.write(page * ALIGN, data)
            expected[page * ALIGN : (page + pages) * ALIGN] = data
        writer.drain()
    finally:
        writer.close()
    assert path.read_bytes() == bytes(expected)


def test_unaligned_writes_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    writer = open_writer(path)
    try:
        assert not writer.write(ALIGN + 1, b"x" * ALIGN)
        assert not writer.write(0, b"x" * (ALIGN - 512))
        assert not writer.write(0, b"")
        writer.drain()
    finally:
        writer.close()
    assert path.read_bytes() == bytes(PAGES * ALIGN)


def test_a_failed_write_is_raised_by_drain_and_by_every_later_write(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(PAGES * ALIGN))
    # A descriptor that cannot write: the writer thread's pwrite fails with EBADF.
    writer = DirectWriter(os.open(path, os.O_RDONLY | os.O_DIRECT), depth=2, buffer_bytes=ALIGN)
    try:
        assert writer.write(0, b"a" * (3 * ALIGN))
        with pytest.raises(OSError, match="Bad file descriptor") as failed:
            writer.drain()
        assert failed.value.errno == errno.EBADF
        with pytest.raises(OSError, match="Bad file descriptor"):
            writer.write(0, b"b" * ALIGN)
    finally:
        writer.close()
    assert path.read_bytes() == bytes(PAGES * ALIGN)


def test_open_gives_a_writer_on_a_filesystem_with_direct_io(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(ALIGN))
    writer = DirectWriter.open(path)
    assert writer is not None
    try:
        assert writer.write(0, b"z" * ALIGN)
        writer.drain()
    finally:
        writer.close()
    assert path.read_bytes() == b"z" * ALIGN


def test_consecutive_writes_share_one_device_write(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    writer = open_writer(path, buffer_bytes=4 * ALIGN)
    try:
        for page in range(4):
            assert writer.write(page * ALIGN, bytes([page + 1]) * ALIGN)
        # Not continued: the next write starts a new buffer.
        assert writer.write(8 * ALIGN, b"\x09" * ALIGN)
        writer.drain()
        assert writer.submitted == 2
    finally:
        writer.close()
    data = path.read_bytes()
    assert [data[p * ALIGN] for p in range(PAGES)] == [1, 2, 3, 4, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]
