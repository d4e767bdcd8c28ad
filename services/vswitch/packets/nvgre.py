"""NVGRE (RFC 7637): the GRE header with key = VSID << 8 | FlowID, and outer IPv4 from PA to PA.

``parse_nvgre`` returns offsets instead of copies so the datapath's receive loop can use it on a
reused buffer; ``decapsulate`` is the typed form of the same checks.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from overland.defaults import MAX_VSID, MIN_VSID
from services.vswitch.packets.errors import DecodeError, DropReason, EncodeError
from services.vswitch.packets.ethernet import ETHERNET_HEADER_LEN, ETHERTYPE_IPV4
from services.vswitch.packets.ipv4 import (
    FLAG_MF,
    IPV4_HEADER_LEN,
    PROTO_GRE,
    PROTO_TCP,
    PROTO_UDP,
    Ipv4Packet,
    decode_ipv4,
    encode_ipv4,
)

GRE_FLAGS_KEY = 0x2000
PROTO_TRANSPARENT_ETHERNET = 0x6558
GRE_HEADER_LEN = 8
# Outer IPv4 + GRE with key + inner Ethernet: what NVGRE adds to an inner IP packet.
NVGRE_OVERHEAD = IPV4_HEADER_LEN + GRE_HEADER_LEN + ETHERNET_HEADER_LEN

# The datapath's flow cache keys, cut from an untagged inner IPv4 frame without decoding it (offsets
# from the frame's first byte; an IPv4 header without options): the MAC header, whose ethertype at
# FLOW_ETHERTYPE_AT says IPv4, up to FLOW_MAC_END; the IPv4 source and destination, FLOW_ADDRESSES_AT
# to FLOW_ADDRESSES_END (also the shortest frame that is keyed); and for frames from a VM the 4 bytes up
# to FLOW_PORTS_END, the TCP/UDP ports that ``flow_id`` hashes into the GRE header the cache keeps. A
# cached routed flow reads the TTL at FLOW_TTL_AT. A received packet's key also holds its VSID, the GRE
# key's first 3 bytes: FLOW_VSID_AT to FLOW_VSID_END, before the inner frame.
FLOW_ETHERTYPE_AT = 12
FLOW_MAC_END = ETHERNET_HEADER_LEN
FLOW_TTL_AT = ETHERNET_HEADER_LEN + 8
FLOW_ADDRESSES_AT = ETHERNET_HEADER_LEN + 12
FLOW_ADDRESSES_END = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN
FLOW_PORTS_END = FLOW_ADDRESSES_END + 4
FLOW_VSID_AT = -4
FLOW_VSID_END = -1

_GRE = struct.Struct("!HHI")
_OUTER = struct.Struct("!B8xB2x4s4s")


@dataclass(frozen=True, slots=True)
class NvgrePacket:
    """A decapsulated NVGRE packet: the outer addresses, the key fields and the inner frame."""

    source_pa: bytes
    destination_pa: bytes
    vsid: int
    flow_id: int
    inner: bytes


def check_vsid(vsid: int) -> None:
    if not MIN_VSID <= vsid <= MAX_VSID:
        raise EncodeError(f"VSID {vsid} outside {MIN_VSID}..{MAX_VSID}")


def gre_header(vsid: int, flow_id: int) -> bytes:
    """The 8-byte NVGRE header for one subnet and flow."""
    check_vsid(vsid)
    if not 0 <= flow_id <= 0xFF:
        raise EncodeError(f"FlowID {flow_id} out of range")
    return _GRE.pack(GRE_FLAGS_KEY, PROTO_TRANSPARENT_ETHERNET, (vsid << 8) | flow_id)


def flow_id(frame: bytes | bytearray | memoryview) -> int:
    """An 8-bit hash of the inner flow (addresses, protocol and ports), for ECMP entropy.

    Frames of one TCP/UDP flow always get the same FlowID; fragments and non-IP frames hash
    addresses only, so all pieces of a datagram take the same path.
    """
    if len(frame) >= ETHERNET_HEADER_LEN + IPV4_HEADER_LEN and frame[12:14] == b"\x08\x00":
        header_length = (frame[14] & 0x0F) * 4
        protocol = frame[23]
        # The protocol seeds the CRC; the header checksum and length between it and the addresses vary.
        addresses = zlib.crc32(frame[26:34], protocol)
        unfragmented = not (frame[20] & 0x3F or frame[21])
        if protocol in (PROTO_TCP, PROTO_UDP) and unfragmented and header_length >= IPV4_HEADER_LEN:
            ports = ETHERNET_HEADER_LEN + header_length
            if len(frame) >= ports + 4:
                return zlib.crc32(frame[ports : ports + 4], addresses) & 0xFF
        return addresses & 0xFF
    return zlib.crc32(frame[0:12]) & 0xFF


def parse_nvgre(packet: bytes | bytearray | memoryview, length: int | None = None) -> tuple[bytes, int, int]:
    """Check an outer IPv4 + NVGRE packet; return (source PA, GRE key, offset of the inner frame).

    The outer header checksum is left to the kernel, which verified it before the raw socket saw it.
    """
    size = len(packet) if length is None else length
    if size < IPV4_HEADER_LEN:
        raise DecodeError(DropReason.TRUNCATED, f"outer IPv4 of {size} bytes")
    version_ihl = packet[0]
    total_length = packet[2] << 8 | packet[3]
    flags_fragment = packet[6] << 8 | packet[7]
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header_length < IPV4_HEADER_LEN or total_length < header_length:
        raise DecodeError(DropReason.BAD_IP_HEADER, "outer IPv4 header")
    if total_length > size:
        raise DecodeError(DropReason.TRUNCATED, f"outer total length {total_length} > {size}")
    if flags_fragment & 0x1FFF or (flags_fragment >> 13) & FLAG_MF:
        raise DecodeError(DropReason.FRAGMENT, "outer fragment")
    protocol, source, _ = _OUTER.unpack_from(packet)[1:]
    if protocol != PROTO_GRE:
        raise DecodeError(DropReason.NOT_GRE, f"IP protocol {protocol}")
    inner = header_length + GRE_HEADER_LEN
    if total_length < inner:
        raise DecodeError(DropReason.TRUNCATED, "GRE header cut short")
    flags, protocol_type, key = _GRE.unpack_from(packet, header_length)
    if flags != GRE_FLAGS_KEY:
        raise DecodeError(DropReason.BAD_GRE_FLAGS, f"GRE flags/version {flags:#06x}")
    if protocol_type != PROTO_TRANSPARENT_ETHERNET:
        raise DecodeError(DropReason.NOT_NVGRE, f"GRE protocol {protocol_type:#06x}")
    if not MIN_VSID <= key >> 8 <= MAX_VSID:
        raise DecodeError(DropReason.RESERVED_VSID, f"VSID {key >> 8}")
    if total_length - inner < ETHERNET_HEADER_LEN:
        raise DecodeError(DropReason.TRUNCATED, "inner Ethernet frame cut short")
    return bytes(source), key, inner


def decapsulate(packet: bytes | bytearray | memoryview) -> NvgrePacket:
    """Decode an outer IPv4 packet carrying NVGRE (header checksum verified)."""
    outer = decode_ipv4(packet)
    source, key, inner = parse_nvgre(packet)
    total_length = packet[2] << 8 | packet[3]
    return NvgrePacket(source, outer.destination, key >> 8, key & 0xFF, bytes(packet[inner:total_length]))


def encapsulate(
    source_pa: bytes,
    destination_pa: bytes,
    vsid: int,
    inner: bytes,
    *,
    ttl: int = 64,
    identification: int = 0,
) -> bytes:
    """The full outer IPv4 packet carrying ``inner`` (an Ethernet frame) as NVGRE."""
    return encode_ipv4(
        Ipv4Packet(
            source=source_pa,
            destination=destination_pa,
            protocol=PROTO_GRE,
            payload=gre_header(vsid, flow_id(inner)) + inner,
            ttl=ttl,
            identification=identification,
        )
    )


def is_ipv4_frame(frame: bytes | bytearray | memoryview) -> bool:
    return len(frame) >= ETHERNET_HEADER_LEN and (frame[12] << 8 | frame[13]) == ETHERTYPE_IPV4
