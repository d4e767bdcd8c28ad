"""Ethernet II frames, with 802.1Q/802.1ad tag detection (NVGRE forbids tagged inner frames)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vswitch.packets.errors import DecodeError, DropReason, EncodeError

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
VLAN_ETHERTYPES = frozenset((ETHERTYPE_VLAN, ETHERTYPE_QINQ))
ETHERNET_HEADER_LEN = 14

_HEADER = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    """An Ethernet frame; ``vlan_id`` is set when the frame carries an 802.1Q/802.1ad tag."""

    destination: bytes
    source: bytes
    ethertype: int
    payload: bytes
    vlan_id: int | None = None


def decode_ethernet(frame: bytes | bytearray | memoryview) -> EthernetFrame:
    if len(frame) < ETHERNET_HEADER_LEN:
        raise DecodeError(DropReason.TRUNCATED, f"Ethernet frame of {len(frame)} bytes")
    destination, source, ethertype = _HEADER.unpack_from(frame)
    if ethertype in VLAN_ETHERTYPES:
        if len(frame) < ETHERNET_HEADER_LEN + 4:
            raise DecodeError(DropReason.TRUNCATED, "802.1Q tag cut short")
        tci, inner_type = _TAG.unpack_from(frame, ETHERNET_HEADER_LEN)
        return EthernetFrame(destination, source, inner_type, bytes(frame[18:]), tci & 0x0FFF)
    return EthernetFrame(destination, source, ethertype, bytes(frame[ETHERNET_HEADER_LEN:]))


def encode_ethernet(frame: EthernetFrame) -> bytes:
    if len(frame.destination) != 6 or len(frame.source) != 6:
        raise EncodeError("MAC addresses are 6 bytes")
    if not 0 <= frame.ethertype <= 0xFFFF:
        raise EncodeError(f"ethertype {frame.ethertype} out of range")
    if frame.vlan_id is None:
        return _HEADER.pack(frame.destination, frame.source, frame.ethertype) + frame.payload
    if not 0 <= frame.vlan_id <= 0x0FFF:
        raise EncodeError(f"VLAN id {frame.vlan_id} out of range")
    return (
        _HEADER.pack(frame.destination, frame.source, ETHERTYPE_VLAN)
        + _TAG.pack(frame.vlan_id, frame.ethertype)
        + frame.payload
    )


def ethernet_header(destination: bytes, source: bytes, ethertype: int) -> bytes:
    return _HEADER.pack(destination, source, ethertype)
