"""One chunk of a delta: encode and verify (checksum, zstd, zero chunks), and the block digests. Pure.

No I/O here: the primary encodes what it read from its snapshot (``ChunkCodec``), the DR site verifies
what it received (``decode_chunk``) before staging it, and both hash blocks the same way for resync.

A chunk's checksum guards the transfer (and an export file) against corruption: XXH3-128 where the DR
site verifies it (a tenth of blake3's CPU, which on two shared cores was a fifth of each site's time),
else blake3. Block digests for resync stay blake3: there a collision would leave a block unsent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import blake3
import xxhash
import zstandard

from overland.v1 import replica_pb2
from services.replica.codec.compression import Compressor, decompress
from services.replica.codec.wire import ChunkView, encode_chunk
from services.replica.errors import ChunkCorrupted, MalformedDelta
from services.replica.settings import CompressionMode
from services.replica.vhd.device import Buffer

DIGEST_SIZE = 32


class Checksum(enum.IntEnum):
    """Values of ``overland.v1.ChunkChecksum``."""

    BLAKE3 = 1
    XXH3_128 = 2


# What this site's receiver verifies (``ReceiverState.chunk_checksums``).
VERIFIED_CHECKSUMS = (replica_pb2.CHUNK_CHECKSUM_BLAKE3, replica_pb2.CHUNK_CHECKSUM_XXH3_128)


def digest(data: Buffer) -> bytes:
    """The 32-byte blake3 digest of ``data``.

    One thread: the primary and the DR site hash at the same time, and on a small shared machine
    blake3's thread pool only competed with them (no faster at 64 KiB..4 MiB, measured).
    """
    return blake3.blake3(data).digest()


def xxh3(data: Buffer) -> bytes:
    """The 16-byte XXH3-128 digest of ``data`` (canonical, big-endian)."""
    return xxhash.xxh3_128_digest(data)


def checksum_for(accepted: list[int]) -> Checksum:
    """The checksum to send to a DR site that verifies ``accepted`` (empty: an older site, blake3)."""
    return Checksum.XXH3_128 if Checksum.XXH3_128 in accepted else Checksum.BLAKE3


def block_digests(data: Buffer, block_size: int) -> bytes:
    """The concatenated blake3 digests of each ``block_size`` block of ``data`` (the last may be short)."""
    view = memoryview(data)
    return b"".join(digest(view[i : i + block_size]) for i in range(0, len(view), block_size))


_ZEROS = bytes(1024 * 1024)


def is_zero(data: Buffer) -> bool:
    """Whether every byte is zero: one memcmp against a zero buffer kept for it (allocating a zero
    buffer per chunk costs 3x the comparison; bytes.count is 20x slower).

    The first byte decides most chunks of real data without the comparison.
    """
    if not len(data):
        return True
    if data[0]:
        return False
    if len(data) <= len(_ZEROS):
        return _ZEROS.startswith(data)
    return data == bytes(len(data))


def _off() -> float:
    return 0.0


@dataclass
class ChunkCodec:
    """Builds the chunks of one delta, in order: zero chunks, compression (see ``compression``) and the
    checksum the DR site verifies."""

    compressor: Compressor = field(default_factory=lambda: Compressor(CompressionMode.OFF, _off))
    checksum: Checksum = Checksum.BLAKE3

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
        payload, compressed = self.compressor.compress(data)
        xxh3_128 = self.checksum == Checksum.XXH3_128
        return encode_chunk(
            disk=disk,
            offset=offset,
            length=len(data),
            data=payload,
            compressed=compressed,
            zero=False,
            blake3=b"" if xxh3_128 else digest(data),
            index=index,
            xxh3=xxh3(data) if xxh3_128 else b"",
        )


def decode_chunk(
    chunk: ChunkView | replica_pb2.DeltaChunk, disk_sizes: dict[str, int], expected_index: int
) -> Buffer:
    """The chunk's uncompressed data (zeros for a zero chunk), verified against each checksum it carries
    (at least one). The chunk is protobuf's, or a ``wire.ChunkView`` whose data is a view of the
    received message.

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
            data = decompress(data, chunk.length)
        except zstandard.ZstdError as error:
            raise ChunkCorrupted(f"chunk {chunk.index} does not decompress: {error}", chunk.index) from None
    where = f"chunk {chunk.index} of disk {chunk.disk!r} at offset {chunk.offset}"
    if len(data) != chunk.length:
        raise ChunkCorrupted(f"{where} holds {len(data)} bytes, not {chunk.length}", chunk.index)
    if not chunk.blake3 and not chunk.xxh3:
        raise ChunkCorrupted(f"{where} carries no checksum", chunk.index)
    if chunk.xxh3 and xxh3(data) != chunk.xxh3:
        raise ChunkCorrupted(f"{where} fails its xxh3 check", chunk.index)
    if chunk.blake3 and digest(data) != chunk.blake3:
        raise ChunkCorrupted(f"{where} fails its blake3 check", chunk.index)
    return data
