"""ARP for IPv4 over Ethernet (RFC 826): decode, encode, and the reply the switch answers with."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vswitch.packets.errors import DecodeError, DropReason, EncodeError

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_LEN = 28

_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True, slots=True)
class ArpPacket:
    operation: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


def decode_arp(data: bytes | bytearray | memoryview) -> ArpPacket:
    if len(data) < ARP_LEN:
        raise DecodeError(DropReason.TRUNCATED, f"ARP of {len(data)} bytes")
    hardware, protocol, hlen, plen, operation, sha, spa, tha, tpa = _ARP.unpack_from(data)
    if (hardware, protocol, hlen, plen) != (1, 0x0800, 6, 4):
        raise DecodeError(DropReason.BAD_ARP, "not ARP for IPv4 over Ethernet")
    if operation not in (ARP_REQUEST, ARP_REPLY):
        raise DecodeError(DropReason.BAD_ARP, f"ARP operation {operation}")
    return ArpPacket(operation, bytes(sha), bytes(spa), bytes(tha), bytes(tpa))


def encode_arp(packet: ArpPacket) -> bytes:
    if len(packet.sender_mac) != 6 or len(packet.target_mac) != 6:
        raise EncodeError("ARP MACs are 6 bytes")
    if len(packet.sender_ip) != 4 or len(packet.target_ip) != 4:
        raise EncodeError("ARP IPv4 addresses are 4 bytes")
    if packet.operation not in (ARP_REQUEST, ARP_REPLY):
        raise EncodeError(f"ARP operation {packet.operation}")
    return _ARP.pack(
        1,
        0x0800,
        6,
        4,
        packet.operation,
        packet.sender_mac,
        packet.sender_ip,
        packet.target_mac,
        packet.target_ip,
    )


def arp_reply(request: ArpPacket, answer_mac: bytes) -> ArpPacket:
    """The reply telling the requester that the target IP is at ``answer_mac``."""
    return ArpPacket(ARP_REPLY, answer_mac, request.target_ip, request.sender_mac, request.sender_ip)
