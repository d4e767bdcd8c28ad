"""One chunk of a delta: encode and verify (blake3, zstd, zero chunks), and the block digests. Pure.

No I/O here: the primary encodes what it read from its snapshot (``ChunkCodec``), the DR site verifies
what it received (``decode_chunk``) before staging it, and both hash blocks the same way for resync.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3
import zstandard

from overland.v1 import replica_pb2
from services.replica.codec.wire import ChunkView, encode_chunk
from services.replica.errors import ChunkCorrupted, MalformedDelta
from services.replica.vhd.device import Buffer

DIGEST_SIZE = 32
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
