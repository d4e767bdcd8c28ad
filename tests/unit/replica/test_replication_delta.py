"""The delta's pure core: chunk encode/verify (codec.chunks), and the primary's runs, batches and token
bucket (primary.chunking)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.codec.chunks import Checksum, ChunkCodec, decode_chunk, digest, is_zero, xxh3
from services.replica.codec.compression import Compressor
from services.replica.codec.wire import ChunkBatch, encode_message, parse_message
from services.replica.errors import ChunkCorrupted, MalformedDelta
from services.replica.primary.chunking import TokenBucket, batches, runs, split_extent
from services.replica.settings import CompressionMode


@given(st.sets(st.integers(0, 300)), st.integers(1, 8), st.integers(1, 6))
def test_runs_cover_exactly_the_blocks(blocks: set[int], block_kib: int, max_blocks: int) -> None:
    block_size = block_kib * 1024
    disk_size = 301 * block_size - 100
    got = runs(blocks, block_size, disk_size, max_blocks * block_size)
    covered: set[int] = set()
    previous_end = -1
    for offset, length in got:
        assert offset > previous_end or previous_end == -1 or offset >= previous_end
        assert 0 < length <= max_blocks * block_size
        assert offset + length <= disk_size
        previous_end = offset + length
        covered |= set(range(offset // block_size, (offset + length - 1) // block_size + 1))
    assert covered == blocks


def test_runs_reject_blocks_outside_the_disk() -> None:
    with pytest.raises(ValueError, match="outside"):
        runs([10], 4096, 4096 * 10, 4096)


@given(st.integers(0, 10**6), st.integers(0, 10**5), st.integers(1000, 10**5))
def test_split_extent(offset: int, length: int, max_bytes: int) -> None:
    pieces = list(split_extent(offset, length, max_bytes))
    assert sum(n for _o, n in pieces) == length
    position = offset
    for o, n in pieces:
        assert o == position
        assert 0 < n <= max_bytes
        position += n


payloads = st.one_of(
    st.binary(min_size=1, max_size=5000),
    st.integers(1, 5000).map(bytes),
    st.integers(1, 3000).map(lambda n: b"ab" * n),
)


def make_codec(compress: bool, checksum: Checksum = Checksum.BLAKE3) -> ChunkCodec:
    mode = CompressionMode.ZSTD if compress else CompressionMode.OFF
    return ChunkCodec(Compressor(mode, lambda: 0.0), checksum)


def encoded(codec: ChunkCodec, disk: str, offset: int, data: bytes, index: int) -> replica_pb2.DeltaChunk:
    """The chunk as protobuf reads the bytes the codec writes."""
    return replica_pb2.DeltaMessage.FromString(
        encode_message([codec.encode(disk, offset, data, index)])
    ).chunk


@given(payloads, st.booleans(), st.sampled_from(Checksum), st.integers(0, 100))
@settings(deadline=None)
def test_encode_decode_roundtrip(data: bytes, compress: bool, checksum: Checksum, index: int) -> None:
    codec = make_codec(compress, checksum)
    chunk = encoded(codec, "d0", 4096, data, index)
    assert chunk.zero == is_zero(data)
    if not chunk.zero:
        # Exactly the checksum asked for: an older DR site gets the blake3 it checks.
        assert (chunk.blake3, chunk.xxh3) == (
            (digest(data), b"") if checksum == Checksum.BLAKE3 else (b"", xxh3(data))
        )
    if chunk.compressed:
        assert len(chunk.data) < len(data)
    assert decode_chunk(chunk, {"d0": 4096 + len(data)}, index) == data
    # The receiver's own reader (data as a view of the message) decodes the same.
    batch = parse_message(encode_message([codec.encode("d0", 4096, data, index)]))
    assert isinstance(batch, ChunkBatch)
    assert bytes(decode_chunk(batch.chunks[0], {"d0": 4096 + len(data)}, index)) == data


@given(st.binary(min_size=16, max_size=4000), st.booleans(), st.sampled_from(Checksum), st.data())
@settings(max_examples=200, deadline=None)
def test_any_flipped_byte_is_detected(
    data: bytes, compress: bool, checksum: Checksum, pick: st.DataObject
) -> None:
    if is_zero(data):
        data = b"\x01" + data[1:]
    chunk = encoded(make_codec(compress, checksum), "d0", 0, data, 0)
    position = pick.draw(st.integers(0, len(chunk.data) - 1))
    corrupted = bytearray(chunk.data)
    corrupted[position] ^= 1 + pick.draw(st.integers(0, 254))
    chunk.data = bytes(corrupted)
    with pytest.raises(ChunkCorrupted) as info:
        decode_chunk(chunk, {"d0": len(data)}, 0)
    assert info.value.chunk_index == 0


def test_a_chunk_checks_every_checksum_it_carries_and_needs_one() -> None:
    data = b"y" * 100
    chunk = encoded(make_codec(False, Checksum.XXH3_128), "d0", 0, data, 0)
    chunk.blake3 = digest(data)
    assert decode_chunk(chunk, {"d0": 100}, 0) == data
    chunk.blake3 = digest(b"z" * 100)
    with pytest.raises(ChunkCorrupted, match="blake3"):
        decode_chunk(chunk, {"d0": 100}, 0)
    chunk.ClearField("blake3")
    chunk.xxh3 = xxh3(b"z" * 100)
    with pytest.raises(ChunkCorrupted, match="xxh3"):
        decode_chunk(chunk, {"d0": 100}, 0)
    chunk.ClearField("xxh3")
    with pytest.raises(ChunkCorrupted, match="no checksum"):
        decode_chunk(chunk, {"d0": 100}, 0)


def test_protocol_errors_are_malformed_not_corrupt() -> None:
    chunk = encoded(make_codec(False), "d0", 0, b"x" * 10, 3)
    with pytest.raises(MalformedDelta, match="index 3"):
        decode_chunk(chunk, {"d0": 10}, 2)
    with pytest.raises(MalformedDelta, match="not in the delta header"):
        decode_chunk(chunk, {"d1": 10}, 3)
    with pytest.raises(MalformedDelta, match="outside"):
        decode_chunk(chunk, {"d0": 9}, 3)
    assert chunk.blake3 == digest(b"x" * 10)


@given(st.floats(1e3, 1e9), st.lists(st.integers(1, 10**6), min_size=1, max_size=50))
def test_token_bucket_long_run_rate(rate: float, sizes: list[int]) -> None:
    burst = 1024.0 * 1024
    bucket = TokenBucket(rate, burst)
    now = 0.0
    for size in sizes:
        now += bucket.take(size, now)
    # Everything beyond the first burst took at least size/rate seconds.
    assert now >= (sum(sizes) - burst) / rate - 1e-6
    assert now <= sum(sizes) / rate + 1e-6


@given(
    st.lists(st.integers(min_value=1, max_value=3 * 1024), max_size=60),
    st.integers(min_value=0, max_value=70),
    st.integers(min_value=1, max_value=2048),
)
def test_batches_cover_chunks_in_order_and_stay_bounded(lengths: list[int], start: int, limit: int) -> None:
    groups = list(batches(((i, lengths[i]) for i in range(start, len(lengths))), limit))
    assert [i for group in groups for i in group] == list(range(start, len(lengths)))
    for group in groups:
        total = sum(lengths[i] for i in group)
        assert len(group) > 0
        assert len(group) == 1 or (total < 2 * limit and all(lengths[i] < limit for i in group))
    # Every group but the last is full: fewer messages than chunks whenever chunks are small.
    for group in groups[:-1]:
        assert sum(lengths[i] for i in group) >= limit or lengths[group[-1] + 1] >= limit


@given(
    st.one_of(st.integers(0, 4096), st.sampled_from([1 << 20, (1 << 20) + 1, 3 << 20])),
    st.integers(0, 4 << 20),
    st.integers(1, 255),
)
def test_is_zero_finds_one_nonzero_byte_anywhere(size: int, where: int, value: int) -> None:
    data = bytearray(size)
    assert is_zero(bytes(data))
    if size:
        data[where % size] = value
        assert not is_zero(bytes(data))
