"""The delta wire format's pure core: block runs, chunk encode/verify (blake3, zstd), a token bucket.

No I/O here: the sender and the receiver read and write disks around these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import blake3
import zstandard

from overland.v1 import replica_pb2
from services.replica.codec.wire import ChunkView, encode_chunk
from services.replica.errors import ChunkCorrupted, MalformedDelta
from services.replica.vhd.device import Buffer

DIGEST_SIZE = 32
# A run of blocks is cut into chunks of at most this much: big enough to amortize per-message cost,
# small enough that a resend after corruption or a cut connection repeats little. Measured for a whole
# initial replication on loopback: 0.5 MiB ~280, 1 MiB ~270-370, 2 MiB ~150-210, 4 MiB ~185-205 MiB/s.
DEFAULT_CHUNK_BYTES = 1024 * 1024
ZSTD_LEVEL = 1


def digest(data: Buffer) -> bytes:
    """The 32-byte blake3 digest of ``data``.

    One thread: the primary and the DR site hash at the same time, and on a small shared machine
    blake3's thread pool only competed with them (no faster at 64 KiB..4 MiB, measured).
    """
    return blake3.blake3(data).digest()


def block_digests(data: Buffer, block_size: int) -> bytes:
    """The concatenated blake3 digests of each ``block_size`` block of ``data`` (the last may be short)."""
    view = memoryview(data)
    return b"".join(digest(view[i : i + block_size]) for i in range(0, len(view), block_size))


def is_zero(data: bytes) -> bool:
    """Whether every byte is zero (one memcmp; bytes.count is several times slower).

    The first byte decides most chunks of real data before the zero buffer is allocated (26 us per MiB).
    """
    return not data or (data[0] == 0 and data == bytes(len(data)))


def runs(blocks: Iterable[int], block_size: int, disk_size: int, max_bytes: int) -> list[tuple[int, int]]:
    """Coalesce changed block indices into ``(offset, length)`` runs of at most ``max_bytes``.

    Runs are sorted, do not overlap, stay inside the disk (the last block may be short) and cover
    exactly the given blocks.
    """
    if block_size <= 0 or max_bytes < block_size:
        raise ValueError("block_size must be positive and max_bytes at least one block")
    out: list[tuple[int, int]] = []
    start = end = -1
    for block in sorted(set(blocks)):
        offset = block * block_size
        if offset >= disk_size or block < 0:
            raise ValueError(f"block {block} is outside a disk of {disk_size} bytes")
        stop = min(offset + block_size, disk_size)
        if offset == end and stop - start <= max_bytes:
            end = stop
            continue
        if start >= 0:
            out.append((start, end - start))
        start, end = offset, stop
    if start >= 0:
        out.append((start, end - start))
    return out


def split_extent(offset: int, length: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` pieces of at most ``max_bytes`` covering the extent in order."""
    end = offset + length
    while offset < end:
        size = min(max_bytes, end - offset)
        yield offset, size
        offset += size


@dataclass
class ChunkCodec:
    """Builds chunks for one delta; ``compress`` turns zstd on (kept only when it actually shrinks)."""

    compress: bool = False
    level: int = ZSTD_LEVEL

    def __post_init__(self) -> None:
        self._compressor = zstandard.ZstdCompressor(level=self.level) if self.compress else None

    def encode(self, disk: str, offset: int, data: bytes, index: int) -> list[Buffer]:
        """The serialized ``DeltaChunk`` as parts for ``wire.encode_message`` (the data is not copied)."""
        if is_zero(data):
            return encode_chunk(
                disk=disk,
                offset=offset,
                length=len(data),
                data=b"",
                compressed=False,
                zero=True,
                blake3=b"",
                index=index,
            )
        payload, compressed = data, False
        if self._compressor is not None:
            packed = self._compressor.compress(data)
            if len(packed) < len(data):
                payload, compressed = packed, True
        return encode_chunk(
            disk=disk,
            offset=offset,
            length=len(data),
            data=payload,
            compressed=compressed,
            zero=False,
            blake3=digest(data),
            index=index,
        )


def batches(lengths: Sequence[int], start: int, max_bytes: int) -> Iterator[range]:
    """Group chunk indices from ``start`` on into consecutive runs to send one message each. Pure.

    A chunk of ``max_bytes`` or more travels alone; smaller ones are packed together until the
    message holds ``max_bytes``, so a message never holds more than twice that.
    """
    first = start
    held = 0
    for index in range(start, len(lengths)):
        if lengths[index] >= max_bytes and index > first:
            yield range(first, index)
            first, held = index, 0
        held += lengths[index]
        if held >= max_bytes:
            yield range(first, index + 1)
            first, held = index + 1, 0
    if first < len(lengths):
        yield range(first, len(lengths))


def decode_chunk(
    chunk: ChunkView | replica_pb2.DeltaChunk, disk_sizes: dict[str, int], expected_index: int
) -> Buffer:
    """The chunk's uncompressed data (zeros for a zero chunk), verified against its blake3. The chunk
    is protobuf's, or a ``wire.ChunkView`` whose data is a view of the received message.

    A protocol error (unknown disk, range outside the disk, wrong index) is ``MalformedDelta``;
    a checksum or decompression failure is ``ChunkCorrupted`` so the sender resends the chunk.
    """
    if chunk.index != expected_index:
        raise MalformedDelta(f"chunk index {chunk.index} arrived where {expected_index} was expected")
    size = disk_sizes.get(chunk.disk)
    if size is None:
        raise MalformedDelta(f"chunk {chunk.index} names disk {chunk.disk!r}, not in the delta header")
    if chunk.length == 0 or chunk.offset + chunk.length > size:
        raise MalformedDelta(
            f"chunk {chunk.index} covers {chunk.offset}+{chunk.length}, "
            f"outside disk {chunk.disk!r} of {size} bytes"
        )
    if chunk.zero:
        if chunk.data:
            raise MalformedDelta(f"chunk {chunk.index} is marked zero but carries data")
        return bytes(chunk.length)
    data: Buffer = chunk.data
    if chunk.compressed:
        try:
            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=chunk.length)
        except zstandard.ZstdError as error:
            raise ChunkCorrupted(f"chunk {chunk.index} does not decompress: {error}", chunk.index) from None
    if len(data) != chunk.length or digest(data) != chunk.blake3:
        raise ChunkCorrupted(
            f"chunk {chunk.index} of disk {chunk.disk!r} at offset {chunk.offset} fails its blake3 check",
            chunk.index,
        )
    return data


@dataclass
class TokenBucket:
    """A bandwidth limit of ``rate`` bytes/s with bursts up to ``burst`` bytes. Pure: the caller passes time.

    ``take`` spends ``n`` bytes and returns how long to wait before sending them. A take larger than
    what is in the bucket goes into debt, which the refill repays, so the long-run rate is ``rate``.
    """

    rate: float
    burst: float
    tokens: float = 0.0
    last: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.tokens = self.burst

    def take(self, n: int, now: float) -> float:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
