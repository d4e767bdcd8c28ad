"""Protobuf's wire encoding, for the few hot paths that frame bytes they already have (pure).

The replica's delta stream (services/replica/codec/wire.py) and the routing table's lookup-record
entries (services/common/schema/entries.py) write what protobuf's serializer would, without copying
their payload into a message first; their tests check the bytes against protobuf.
"""

from __future__ import annotations

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
