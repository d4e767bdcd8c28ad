"""The delta stream's byte formats, shared by both sites: the primary encodes, the DR site decodes.

``chunks`` encodes and verifies one chunk (blake3, zstd, zero chunks); ``wire`` writes and reads the
``SendDelta`` messages that carry them without protobuf's copies; ``media`` frames the same stream as
an external-media export file.
"""

from services.replica.codec.chunks import (
    DIGEST_SIZE,
    ChunkCodec,
    block_digests,
    decode_chunk,
    digest,
    is_zero,
)
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
    "ChunkBatch",
    "ChunkCodec",
    "ChunkView",
    "Received",
    "block_digests",
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
]
