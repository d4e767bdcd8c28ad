"""AUTO compression (codec.compression): whatever it decides, the receiver gets the same bytes; it sends
incompressible data raw after trials that back off, and compresses what compresses only where that
pays on the link."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.replica.codec.chunks import Checksum, ChunkCodec, decode_chunk
from services.replica.codec.compression import MAX_SKIP, Compressor, pays, sample
from services.replica.codec.wire import ChunkBatch, encode_message, parse_message
from services.replica.settings import CompressionMode

MIB = 1024 * 1024
WORDS = [b"replica", b"delta", b"chunk", b"the", b"of", b"disk", b"site", b"cycle", b"primary", b"\n"]


def text(size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.choice(WORDS) + b" "
    return bytes(out[:size])


def noise(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class Clock:
    """Advances ``step`` seconds at every reading: each compression (a trial or a chunk) takes ``step``."""

    def __init__(self, step: float):
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# A piece of a chunk: (kind, size); kinds are what disks hold: noise, text, zeros.
pieces = st.lists(
    st.tuples(st.sampled_from(["noise", "text", "zeros"]), st.integers(1, 40_000)), min_size=1, max_size=4
)


def build(parts: list[tuple[str, int]], seed: int) -> bytes:
    make = {"noise": noise, "text": text, "zeros": lambda n, _s: bytes(n)}
    return b"".join(make[kind](size, seed + i) for i, (kind, size) in enumerate(parts))


@given(
    st.lists(pieces, min_size=1, max_size=12),
    st.sampled_from(CompressionMode),
    st.sampled_from(Checksum),
    st.lists(st.floats(1e3, 1e11), min_size=1, max_size=12),
    st.floats(1e-6, 1.0),
    st.integers(0, 100),
)
@settings(max_examples=60, deadline=None)
def test_the_receiver_gets_identical_bytes(
    chunks: list[list[tuple[str, int]]],
    mode: CompressionMode,
    checksum: Checksum,
    link_rates: list[float],
    compress_seconds: float,
    seed: int,
) -> None:
    codec = ChunkCodec(Compressor(mode, Clock(compress_seconds)), checksum)
    offset = 0
    datas = [build(parts, seed + i) for i, parts in enumerate(chunks)]
    size = sum(len(d) for d in datas)
    for index, data in enumerate(datas):
        message = encode_message([codec.encode("d0", offset, data, index)])
        batch = parse_message(message)
        assert isinstance(batch, ChunkBatch)
        (chunk,) = batch.chunks
        if chunk.compressed:
            assert len(chunk.data) < len(data)
            assert mode != CompressionMode.OFF
        assert bytes(decode_chunk(chunk, {"d0": size}, index)) == data
        rate = link_rates[index % len(link_rates)]
        codec.compressor.observe_send(len(message), len(message) / rate)
        offset += len(data)


def test_auto_sends_incompressible_data_raw_after_trials_that_back_off() -> None:
    compressor = Compressor(CompressionMode.AUTO, Clock(1e-4))
    chunk = noise(MIB)
    results = [compressor.compress(chunk) for _ in range(200)]
    assert not any(compressed for _payload, compressed in results)
    assert all(payload is chunk for payload, _ in results)
    # Trials at chunks 0, 2, 5, 10, 19, 36 then one every MAX_SKIP + 1: a handful, not 200.
    assert compressor.trials <= 6 + 200 // (MAX_SKIP + 1)


def test_auto_compresses_text_on_a_slow_link_and_sends_it_raw_on_a_fast_one() -> None:
    chunk = text(MIB)
    # A 32 KiB trial in 1 ms (zstd at 32 MB/s, the text to a third): a link of 10 MB/s gains from
    # compressing, a link of 10 GB/s does not.
    slow = Compressor(CompressionMode.AUTO, Clock(1e-3))
    slow.observe_send(MIB, 0.1)
    assert all(slow.compress(chunk)[1] for _ in range(20))
    fast = Compressor(CompressionMode.AUTO, Clock(1e-3))
    fast.observe_send(MIB, 1e-4)
    sent = [fast.compress(chunk) for _ in range(100)]
    assert not any(compressed for _payload, compressed in sent)
    assert fast.trials <= 6 + 100 // (MAX_SKIP + 1)


def test_auto_follows_the_link_and_the_bandwidth_limit() -> None:
    chunk = text(MIB)
    compressor = Compressor(CompressionMode.AUTO, Clock(1e-3))
    compressor.observe_send(MIB, 1e-4)
    assert not compressor.compress(chunk)[1]
    # The link slows down (a WAN, or the DR site is busy): the trials that follow notice.
    for _ in range(50):
        compressor.observe_send(MIB, 1.0)
    assert any(compressor.compress(chunk)[1] for _ in range(MAX_SKIP + 2))
    limited = Compressor(CompressionMode.AUTO, Clock(1e-3), limit=1_000_000)
    limited.observe_send(MIB, 1e-4)
    assert limited.compress(chunk)[1]


def test_zstd_mode_tries_every_chunk_and_off_none() -> None:
    chunk = text(64 * 1024)
    assert all(Compressor(CompressionMode.ZSTD, Clock(1.0)).compress(chunk)[1] for _ in range(3))
    assert not Compressor(CompressionMode.OFF, Clock(1e-9)).compress(chunk)[1]
    raw = noise(4096)
    assert Compressor(CompressionMode.ZSTD, Clock(1e-9)).compress(raw) == (raw, False)


@given(st.floats(1.0, 1e12), st.floats(0.0, 1.0), st.floats(1.0, 1e12), st.floats(1.0, 1e12))
def test_pays_when_compression_outruns_the_link(
    compress: float, ratio: float, link: float, faster: float
) -> None:
    if pays(compress, ratio, link):
        # A slower link, or faster compression, pays too.
        assert pays(compress, ratio, link / 2)
        assert pays(compress + faster, ratio, link)
    assert not pays(compress, max(ratio, 0.9), None)
    assert pays(compress, min(ratio, 0.5), None)


@given(st.integers(0, 300_000))
def test_sample_is_a_bounded_part_of_the_chunk(size: int) -> None:
    data = noise(size, size)
    piece = bytes(sample(data))
    assert len(piece) <= max(size, 64 * 1024)
    assert piece[:100] == data[:100][: len(piece)]
