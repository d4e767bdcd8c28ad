"""ICMP messages: echo (tests) and destination unreachable / fragmentation needed (RFC 1191)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vswitch.packets.checksum import internet_checksum
from services.vswitch.packets.errors import DecodeError, DropReason, EncodeError

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACHABLE = 3
ICMP_ECHO_REQUEST = 8
CODE_FRAGMENTATION_NEEDED = 4

_HEADER = struct.Struct("!BBH4s")
_ECHO_REST = struct.Struct("!HH")
_FRAG_REST = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """An ICMP message; ``rest`` is the 4 type-specific header bytes."""

    type: int
    code: int
    rest: bytes
    payload: bytes


def decode_icmp(data: bytes | bytearray | memoryview) -> IcmpMessage:
    if len(data) < 8:
        raise DecodeError(DropReason.TRUNCATED, f"ICMP of {len(data)} bytes")
    if internet_checksum(data) != 0:
        raise DecodeError(DropReason.BAD_CHECKSUM, "ICMP checksum")
    icmp_type, code, _, rest = _HEADER.unpack_from(data)
    return IcmpMessage(icmp_type, code, bytes(rest), bytes(data[8:]))


def encode_icmp(message: IcmpMessage) -> bytes:
    if not (0 <= message.type <= 0xFF and 0 <= message.code <= 0xFF) or len(message.rest) != 4:
        raise EncodeError("ICMP type/code out of range or rest not 4 bytes")
    body = bytearray(_HEADER.pack(message.type, message.code, 0, message.rest) + message.payload)
    struct.pack_into("!H", body, 2, internet_checksum(body))
    return bytes(body)


def echo_request(identifier: int, sequence: int, data: bytes = b"") -> IcmpMessage:
    return IcmpMessage(ICMP_ECHO_REQUEST, 0, _ECHO_REST.pack(identifier, sequence), data)


def echo_fields(message: IcmpMessage) -> tuple[int, int]:
    """(identifier, sequence) of an echo request or reply."""
    identifier, sequence = _ECHO_REST.unpack(message.rest)
    return identifier, sequence


def fragmentation_needed(original_ip_packet: bytes, next_hop_mtu: int) -> IcmpMessage:
    """Type 3 code 4 quoting the original header and 8 bytes of its payload (RFC 792, RFC 1191)."""
    if not 68 <= next_hop_mtu <= 0xFFFF:
        raise EncodeError(f"next-hop MTU {next_hop_mtu} out of range")
    header_length = (original_ip_packet[0] & 0x0F) * 4 if original_ip_packet else 0
    return IcmpMessage(
        ICMP_DEST_UNREACHABLE,
        CODE_FRAGMENTATION_NEEDED,
        _FRAG_REST.pack(0, next_hop_mtu),
        bytes(original_ip_packet[: header_length + 8]),
    )


def next_hop_mtu(message: IcmpMessage) -> int:
    return _FRAG_REST.unpack(message.rest)[1]
