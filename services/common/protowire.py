"""Protobuf's wire encoding, for the few hot paths that frame bytes they already have (pure).

The replica's delta stream (services/replica/codec/wire.py) and the routing table's lookup-record
entries (services/common/schema/entries.py) write what protobuf's serializer would, without copying
their payload into a message first; their tests check the bytes against protobuf. The servers read
it back in one case: to name the string field of a request that protobuf refused as not UTF-8.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

VARINT = 0
LEN = 2

_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def varint(value: int) -> bytes:
    """The base-128 varint of a non-negative int."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_key(number: int, wire_type: int) -> bytes:
    """The key that precedes a field: its number and wire type."""
    return varint(number << 3 | wire_type)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


_FIXED_SIZES = {1: 8, 5: 4}


def undecodable_string(descriptor: Descriptor, data: bytes, path: str = "") -> str | None:
    """The path (``provider_address.host_name``, ``upserts[2].ca``) of the first string field of a
    message of type ``descriptor`` whose bytes in ``data`` are not UTF-8, which protobuf refuses to
    parse; None when there is none (or the bytes are not a message at all)."""
    counts: dict[int, int] = {}
    position = 0
    try:
        while position < len(data):
            key, position = _read_varint(data, position)
            number, wire_type = key >> 3, key & 7
            if wire_type == VARINT:
                _, position = _read_varint(data, position)
                continue
            if wire_type in _FIXED_SIZES:
                position += _FIXED_SIZES[wire_type]
                continue
            if wire_type != LEN:
                return None
            length, position = _read_varint(data, position)
            payload = data[position : position + length]
            position += length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            index = counts.get(number, 0)
            counts[number] = index + 1
            name = f"{path}.{field.name}" if path else field.name
            if _is_repeated(field):
                name += f"[{index}]"
            if field.type == field.TYPE_STRING:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    return name
            elif field.type == field.TYPE_MESSAGE and field.message_type is not None:
                found = undecodable_string(field.message_type, payload, name)
                if found is not None:
                    return found
    except ValueError:
        return None
    return None


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
