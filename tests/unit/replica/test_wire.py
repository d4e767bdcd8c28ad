"""The delta stream's hand-written wire code agrees with protobuf on every input."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.codec.wire import ChunkBatch, encode_chunk, encode_message, parse_message, serialize
from services.replica.vhd.device import Buffer

FIELDS = ("disk", "offset", "length", "data", "compressed", "zero", "blake3", "index", "xxh3")

chunks = st.builds(
    replica_pb2.DeltaChunk,
    disk=st.text(max_size=12),
    offset=st.integers(0, (1 << 64) - 1),
    length=st.integers(0, (1 << 32) - 1),
    data=st.binary(max_size=300),
    compressed=st.booleans(),
    zero=st.booleans(),
    blake3=st.binary(max_size=40),
    index=st.integers(0, (1 << 64) - 1),
    xxh3=st.binary(max_size=20),
)


def chunk_tuple(chunk: object) -> tuple[object, ...]:
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in (getattr(chunk, f) for f in FIELDS))


def as_message(chunk_list: list[replica_pb2.DeltaChunk]) -> replica_pb2.DeltaMessage:
    if len(chunk_list) == 1:
        return replica_pb2.DeltaMessage(chunk=chunk_list[0])
    return replica_pb2.DeltaMessage(chunks=replica_pb2.DeltaChunks(chunks=chunk_list))


def encoded(chunk: replica_pb2.DeltaChunk) -> list[Buffer]:
    return encode_chunk(
        disk=chunk.disk,
        offset=chunk.offset,
        length=chunk.length,
        data=chunk.data,
        compressed=chunk.compressed,
        zero=chunk.zero,
        blake3=chunk.blake3,
        index=chunk.index,
        xxh3=chunk.xxh3,
    )


@given(st.lists(chunks, min_size=1, max_size=4))
def test_encoding_writes_the_bytes_protobuf_writes(chunk_list: list[replica_pb2.DeltaChunk]) -> None:
    message = as_message(chunk_list)
    assert encode_message([encoded(c) for c in chunk_list]) == message.SerializeToString(deterministic=True)


@given(st.lists(chunks, min_size=1, max_size=4))
def test_parsing_reads_chunks_as_protobuf_does(chunk_list: list[replica_pb2.DeltaChunk]) -> None:
    parsed = parse_message(as_message(chunk_list).SerializeToString())
    assert isinstance(parsed, ChunkBatch)
    assert [chunk_tuple(c) for c in parsed.chunks] == [chunk_tuple(c) for c in chunk_list]


def normalized(message: replica_pb2.DeltaMessage | ChunkBatch) -> object:
    """What a receiver sees: the chunks, or the message itself when it holds something else."""
    if isinstance(message, ChunkBatch):
        return [chunk_tuple(c) for c in message.chunks]
    kind = message.WhichOneof("body")
    if kind == "chunk":
        return [chunk_tuple(message.chunk)]
    if kind == "chunks":
        return [chunk_tuple(c) for c in message.chunks.chunks]
    return message.SerializeToString(deterministic=True)


def agrees_with_protobuf(buffer: bytes) -> None:
    try:
        expected = replica_pb2.DeltaMessage.FromString(buffer)
    except DecodeError:
        with pytest.raises(DecodeError):
            parse_message(buffer)
        return
    assert normalized(parse_message(buffer)) == normalized(expected)


@given(st.binary(max_size=200))
def test_any_bytes_parse_as_protobuf_parses_them(buffer: bytes) -> None:
    agrees_with_protobuf(buffer)


@given(st.lists(chunks, min_size=1, max_size=3), st.data())
def test_damaged_or_extended_messages_parse_as_protobuf_parses_them(
    chunk_list: list[replica_pb2.DeltaChunk], data: st.DataObject
) -> None:
    buffer = bytearray(as_message(chunk_list).SerializeToString())
    action = data.draw(st.sampled_from(["flip", "truncate", "append", "insert"]))
    if action == "flip" and buffer:
        position = data.draw(st.integers(0, len(buffer) - 1))
        buffer[position] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del buffer[data.draw(st.integers(0, len(buffer))) :]
    elif action == "append":
        # Another field after the chunk: a header (oneof, the last wins) or an unknown one.
        buffer += data.draw(st.sampled_from([b"\x18\x05", b"\x0a\x02\x08\x01", b"\xf8\x01\x01", b"\x12\x00"]))
    else:
        position = data.draw(st.integers(0, len(buffer)))
        buffer[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    agrees_with_protobuf(bytes(buffer))


def test_header_and_end_messages_go_through_protobuf() -> None:
    header = replica_pb2.DeltaMessage(header=replica_pb2.DeltaHeader(vm_name="vm1", sequence=3))
    parsed = parse_message(header.SerializeToString())
    assert isinstance(parsed, replica_pb2.DeltaMessage)
    assert parsed.header.vm_name == "vm1"
    end = parse_message(replica_pb2.DeltaMessage(end_of_delta=7).SerializeToString())
    assert isinstance(end, replica_pb2.DeltaMessage)
    assert end.end_of_delta == 7


def test_chunk_data_is_a_view_of_the_received_buffer() -> None:
    buffer = replica_pb2.DeltaMessage(
        chunk=replica_pb2.DeltaChunk(disk="d0", data=b"x" * 4096)
    ).SerializeToString()
    parsed = parse_message(buffer)
    assert isinstance(parsed, ChunkBatch)
    data = parsed.chunks[0].data
    assert isinstance(data, memoryview)
    assert data.obj is buffer


def test_serialize_passes_encoded_messages_through() -> None:
    message = replica_pb2.DeltaMessage(end_of_delta=2)
    assert serialize(message) == message.SerializeToString()
    assert serialize(b"\x18\x02") == b"\x18\x02"


@pytest.mark.parametrize(
    "body",
    [
        b"\x10" + b"\xff" * 9 + b"\x7f",  # a 10-byte varint past 64 bits: protobuf keeps the low 64
        b"\x18\x85\x80\x80\x80\x10",  # a uint32 varint past 32 bits: protobuf keeps the low 32
        b"\x10" + b"\xff" * 10 + b"\x01",  # an 11-byte varint: corrupt
        b"\x0a\x02\xc3\x28",  # a disk name that is not UTF-8: corrupt
    ],
)
def test_edge_varints_and_names_parse_as_protobuf_parses_them(body: bytes) -> None:
    agrees_with_protobuf(b"\x12" + bytes([len(body)]) + body)
