"""The delta stream's byte formats, shared by both sites: the primary encodes, the DR site decodes.

``chunks`` encodes and verifies one chunk (checksum, zstd, zero chunks), ``compression`` decides which
chunks go compressed; ``wire`` writes and reads the
``SendDelta`` messages that carry them without protobuf's copies; ``media`` frames the same stream as
an external-media export file.
"""

from services.replica.codec.chunks import (
    DIGEST_SIZE,
    VERIFIED_CHECKSUMS,
    Checksum,
    ChunkCodec,
    block_digests,
    checksum_for,
    decode_chunk,
    digest,
    is_zero,
    xxh3,
)
from services.replica.codec.compression import Compressor
from services.replica.codec.media import read_export, write_export
from services.replica.codec.wire import (
    ChunkBatch,
    ChunkView,
    Received,
    chunks_of,
    encode_chunk,
    encode_message,
    parse_message,
    serialize,
)

__all__ = [
    "DIGEST_SIZE",
    "VERIFIED_CHECKSUMS",
    "Checksum",
    "ChunkBatch",
    "ChunkCodec",
    "ChunkView",
    "Compressor",
    "Received",
    "block_digests",
    "checksum_for",
    "chunks_of",
    "decode_chunk",
    "digest",
    "encode_chunk",
    "encode_message",
    "is_zero",
    "parse_message",
    "read_export",
    "serialize",
    "write_export",
    "xxh3",
]
