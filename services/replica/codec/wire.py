"""The delta stream's hot messages on the wire, without protobuf's copies of the chunk data. Pure.

A ``DeltaMessage`` carrying chunks is almost all chunk data. Building one with protobuf copies the
data into the message and again when serializing it; parsing copies it into the message and again
when ``chunk.data`` is read. Those four copies cost the two sites about as much CPU as hashing it.

``encode_chunk`` / ``encode_message`` write exactly the bytes protobuf's serializer writes for the
same message (fields in number order, defaults left out), with the data copied once, when the parts
are joined. ``parse_message`` reads the common shape (one ``chunk``, or one ``chunks`` batch, each
field at most once, nothing unknown) into ``ChunkView``s whose ``data`` is a view of the received
buffer, and hands everything else to protobuf. So the wire format is the ``.proto`` one, any client
may send any valid message, and invalid input fails exactly as protobuf fails it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from overland.v1 import replica_pb2
from services.common.protowire import LEN, VARINT, field_key, varint
from services.replica.vhd.device import Buffer

# DeltaMessage fields.
_MESSAGE_CHUNK = 2
_MESSAGE_CHUNKS = 4
# DeltaChunks field.
_CHUNKS_CHUNK = 1
# DeltaChunk fields: number -> (name, wire type).
_CHUNK_FIELDS = {
    1: ("disk", LEN),
    2: ("offset", VARINT),
    3: ("length", VARINT),
    4: ("data", LEN),
    5: ("compressed", VARINT),
    6: ("zero", VARINT),
    7: ("blake3", LEN),
    8: ("index", VARINT),
    9: ("xxh3", LEN),
}
_UINT64 = (1 << 64) - 1
_UINT32 = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class ChunkView:
    """A ``DeltaChunk`` read from the wire; ``data`` is a view of the received message."""

    disk: str = ""
    offset: int = 0
    length: int = 0
    data: Buffer = b""
    compressed: bool = False
    zero: bool = False
    blake3: bytes = b""
    index: int = 0
    xxh3: bytes = b""


@dataclass(frozen=True, slots=True)
class ChunkBatch:
    """A ``DeltaMessage`` that carries only chunks (its ``chunk`` or its ``chunks`` field)."""

    chunks: tuple[ChunkView, ...]


Received = replica_pb2.DeltaMessage | ChunkBatch


def chunks_of(message: Received) -> Sequence[ChunkView | replica_pb2.DeltaChunk] | None:
    """The chunks a received message carries, or None when it carries something else."""
    if isinstance(message, ChunkBatch):
        return message.chunks
    kind = message.WhichOneof("body")
    if kind == "chunk":
        return [message.chunk]
    if kind == "chunks":
        return list(message.chunks.chunks)
    return None


# -- encoding ------------------------------------------------------------------------------------


def encode_chunk(
    *,
    disk: str,
    offset: int,
    length: int,
    data: Buffer,
    compressed: bool,
    zero: bool,
    blake3: bytes,
    index: int,
    xxh3: bytes = b"",
) -> list[Buffer]:
    """The serialized ``DeltaChunk`` as parts to join (``data`` stays uncopied among them)."""
    head = bytearray()
    if disk:
        name = disk.encode()
        head += field_key(1, LEN) + varint(len(name)) + name
    if offset:
        head += field_key(2, VARINT) + varint(offset)
    if length:
        head += field_key(3, VARINT) + varint(length)
    parts: list[Buffer] = [bytes(head)]
    if len(data):
        parts += [field_key(4, LEN) + varint(len(data)), data]
    tail = bytearray()
    if compressed:
        tail += field_key(5, VARINT) + b"\x01"
    if zero:
        tail += field_key(6, VARINT) + b"\x01"
    if blake3:
        tail += field_key(7, LEN) + varint(len(blake3)) + blake3
    if index:
        tail += field_key(8, VARINT) + varint(index)
    if xxh3:
        tail += field_key(9, LEN) + varint(len(xxh3)) + xxh3
    parts.append(bytes(tail))
    return parts


def _sized(number: int, parts: Sequence[Buffer]) -> list[Buffer]:
    return [field_key(number, LEN) + varint(sum(len(p) for p in parts)), *parts]


def encode_message(chunks: Sequence[list[Buffer]]) -> bytes:
    """A serialized ``DeltaMessage``: one chunk in ``chunk``, several in a ``chunks`` batch."""
    if len(chunks) == 1:
        return b"".join(_sized(_MESSAGE_CHUNK, chunks[0]))
    batch = [part for chunk in chunks for part in _sized(_CHUNKS_CHUNK, chunk)]
    return b"".join(_sized(_MESSAGE_CHUNKS, batch))


def serialize(message: replica_pb2.DeltaMessage | bytes) -> bytes:
    """The request serializer of ``SendDelta``: pre-encoded messages pass through."""
    return message if isinstance(message, bytes) else message.SerializeToString()


# -- parsing -------------------------------------------------------------------------------------


class _Irregular(Exception):
    """Not the common shape: protobuf decides."""


def _read_varint(view: memoryview, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while position < end and shift < 70:
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & _UINT64, position
        shift += 7
    raise _Irregular


def _fields(view: memoryview, start: int, end: int) -> list[tuple[int, int, int | memoryview]]:
    """``(number, wire type, value)`` of each varint or length-delimited field in ``[start, end)``."""
    fields: list[tuple[int, int, int | memoryview]] = []
    position = start
    while position < end:
        key, position = _read_varint(view, position, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, position = _read_varint(view, position, end)
            fields.append((number, wire_type, value))
        elif wire_type == LEN:
            size, position = _read_varint(view, position, end)
            if size > end - position:
                raise _Irregular
            fields.append((number, wire_type, view[position : position + size]))
            position += size
        else:
            raise _Irregular
    return fields


def _chunk(view: memoryview) -> ChunkView:
    values: dict[str, object] = {}
    for number, wire_type, value in _fields(view, 0, len(view)):
        field = _CHUNK_FIELDS.get(number)
        if field is None or field[1] != wire_type or field[0] in values:
            raise _Irregular
        values[field[0]] = value
    try:
        disk = bytes(values.pop("disk", b"")).decode()  # type: ignore[call-overload]
    except UnicodeDecodeError:
        raise _Irregular from None
    for flag in ("compressed", "zero"):
        values[flag] = bool(values.get(flag, 0))
    if "length" in values:
        values["length"] = int(values["length"]) & _UINT32  # type: ignore[call-overload]
    for digest in ("blake3", "xxh3"):
        if digest in values:
            values[digest] = bytes(values[digest])  # type: ignore[call-overload]
    return ChunkView(disk=disk, **values)  # type: ignore[arg-type]


def _fast(view: memoryview) -> ChunkBatch:
    outer = _fields(view, 0, len(view))
    if len(outer) != 1 or outer[0][1] != LEN:
        raise _Irregular
    number, _wire_type, body = outer[0]
    assert isinstance(body, memoryview)
    if number == _MESSAGE_CHUNK:
        return ChunkBatch((_chunk(body),))
    if number != _MESSAGE_CHUNKS:
        raise _Irregular
    chunks = []
    for inner_number, inner_type, inner in _fields(body, 0, len(body)):
        if inner_number != _CHUNKS_CHUNK or inner_type != LEN:
            raise _Irregular
        assert isinstance(inner, memoryview)
        chunks.append(_chunk(inner))
    return ChunkBatch(tuple(chunks))


def parse_message(buffer: bytes) -> replica_pb2.DeltaMessage | ChunkBatch:
    """The request deserializer of ``SendDelta``: chunks as views, anything else by protobuf.

    Raises protobuf's ``DecodeError`` for a message protobuf cannot parse.
    """
    try:
        return _fast(memoryview(buffer))
    except _Irregular:
        return replica_pb2.DeltaMessage.FromString(buffer)
