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
from services.replica.vhd.device import Buffer

_VARINT = 0
_LEN = 2
# DeltaMessage fields.
_MESSAGE_CHUNK = 2
_MESSAGE_CHUNKS = 4
# DeltaChunks field.
_CHUNKS_CHUNK = 1
# DeltaChunk fields: number -> (name, wire type).
_CHUNK_FIELDS = {
    1: ("disk", _LEN),
    2: ("offset", _VARINT),
    3: ("length", _VARINT),
    4: ("data", _LEN),
    5: ("compressed", _VARINT),
    6: ("zero", _VARINT),
    7: ("blake3", _LEN),
    8: ("index", _VARINT),
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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


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
) -> list[Buffer]:
    """The serialized ``DeltaChunk`` as parts to join (``data`` stays uncopied among them)."""
    head = bytearray()
    if disk:
        name = disk.encode()
        head += _key(1, _LEN) + _varint(len(name)) + name
    if offset:
        head += _key(2, _VARINT) + _varint(offset)
    if length:
        head += _key(3, _VARINT) + _varint(length)
    parts: list[Buffer] = [bytes(head)]
    if len(data):
        parts += [_key(4, _LEN) + _varint(len(data)), data]
    tail = bytearray()
    if compressed:
        tail += _key(5, _VARINT) + b"\x01"
    if zero:
        tail += _key(6, _VARINT) + b"\x01"
    if blake3:
        tail += _key(7, _LEN) + _varint(len(blake3)) + blake3
    if index:
        tail += _key(8, _VARINT) + _varint(index)
    parts.append(bytes(tail))
    return parts


def _sized(number: int, parts: Sequence[Buffer]) -> list[Buffer]:
    return [_key(number, _LEN) + _varint(sum(len(p) for p in parts)), *parts]


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
        if wire_type == _VARINT:
            value, position = _read_varint(view, position, end)
            fields.append((number, wire_type, value))
        elif wire_type == _LEN:
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
    if "blake3" in values:
        values["blake3"] = bytes(values["blake3"])  # type: ignore[call-overload]
    return ChunkView(disk=disk, **values)  # type: ignore[arg-type]


def _fast(view: memoryview) -> ChunkBatch:
    outer = _fields(view, 0, len(view))
    if len(outer) != 1 or outer[0][1] != _LEN:
        raise _Irregular
    number, _wire_type, body = outer[0]
    assert isinstance(body, memoryview)
    if number == _MESSAGE_CHUNK:
        return ChunkBatch((_chunk(body),))
    if number != _MESSAGE_CHUNKS:
        raise _Irregular
    chunks = []
    for inner_number, inner_type, inner in _fields(body, 0, len(body)):
        if inner_number != _CHUNKS_CHUNK or inner_type != _LEN:
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
