"""IPv4 packets: decode with header checks, encode with the header checksum."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vswitch.packets.checksum import internet_checksum
from services.vswitch.packets.errors import DecodeError, DropReason, EncodeError

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47
FLAG_DF = 0x2
FLAG_MF = 0x1
IPV4_HEADER_LEN = 20

_HEADER = struct.Struct("!BBHHHBBH4s4s")


@dataclass(frozen=True, slots=True)
class Ipv4Packet:
    """An IPv4 packet. ``flags`` holds the 3 flag bits (DF = 2, MF = 1)."""

    source: bytes
    destination: bytes
    protocol: int
    payload: bytes
    ttl: int = 64
    tos: int = 0
    identification: int = 0
    flags: int = FLAG_DF
    fragment_offset: int = 0
    options: bytes = b""

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags & FLAG_DF)

    @property
    def header_length(self) -> int:
        return IPV4_HEADER_LEN + len(self.options)


def decode_ipv4(data: bytes | bytearray | memoryview, verify_checksum: bool = True) -> Ipv4Packet:
    """Decode one IPv4 packet; bytes past ``total_length`` (Ethernet padding) are ignored."""
    if len(data) < IPV4_HEADER_LEN:
        raise DecodeError(DropReason.TRUNCATED, f"IPv4 header of {len(data)} bytes")
    version_ihl, tos, total_length, identification, flags_fragment, ttl, protocol, _, source, destination = (
        _HEADER.unpack_from(data)
    )
    if version_ihl >> 4 != 4:
        raise DecodeError(DropReason.BAD_IP_HEADER, f"IP version {version_ihl >> 4}")
    header_length = (version_ihl & 0x0F) * 4
    if header_length < IPV4_HEADER_LEN:
        raise DecodeError(DropReason.BAD_IP_HEADER, f"IHL {header_length // 4}")
    if total_length < header_length:
        raise DecodeError(DropReason.BAD_IP_HEADER, f"total length {total_length} < header {header_length}")
    if total_length > len(data):
        raise DecodeError(DropReason.TRUNCATED, f"total length {total_length} > {len(data)} bytes")
    if verify_checksum and internet_checksum(data[:header_length]) != 0:
        raise DecodeError(DropReason.BAD_CHECKSUM, "IPv4 header checksum")
    return Ipv4Packet(
        source=bytes(source),
        destination=bytes(destination),
        protocol=protocol,
        payload=bytes(data[header_length:total_length]),
        ttl=ttl,
        tos=tos,
        identification=identification,
        flags=flags_fragment >> 13,
        fragment_offset=flags_fragment & 0x1FFF,
        options=bytes(data[IPV4_HEADER_LEN:header_length]),
    )


def ipv4_header(packet: Ipv4Packet) -> bytes:
    """The encoded header (with checksum) of ``packet``."""
    if len(packet.source) != 4 or len(packet.destination) != 4:
        raise EncodeError("IPv4 addresses are 4 bytes")
    if len(packet.options) % 4 or len(packet.options) > 40:
        raise EncodeError("IPv4 options must be a multiple of 4 bytes, at most 40")
    total_length = packet.header_length + len(packet.payload)
    if total_length > 0xFFFF:
        raise EncodeError(f"IPv4 packet of {total_length} bytes")
    for name, value, limit in (
        ("ttl", packet.ttl, 0xFF),
        ("tos", packet.tos, 0xFF),
        ("protocol", packet.protocol, 0xFF),
        ("identification", packet.identification, 0xFFFF),
        ("flags", packet.flags, 0x7),
        ("fragment_offset", packet.fragment_offset, 0x1FFF),
    ):
        if not 0 <= value <= limit:
            raise EncodeError(f"{name} {value} out of range")
    header = bytearray(
        _HEADER.pack(
            0x40 | (packet.header_length // 4),
            packet.tos,
            total_length,
            packet.identification,
            (packet.flags << 13) | packet.fragment_offset,
            packet.ttl,
            packet.protocol,
            0,
            packet.source,
            packet.destination,
        )
        + packet.options
    )
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header)


def encode_ipv4(packet: Ipv4Packet) -> bytes:
    return ipv4_header(packet) + packet.payload
