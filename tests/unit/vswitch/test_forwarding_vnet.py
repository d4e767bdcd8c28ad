"""The virtio-net headers the datapath writes to TAPs (pure parts of datapath/tap.py)."""

from __future__ import annotations

import pytest

from services.vswitch.datapath.tap import (
    PLAIN_VNET_HDR,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_NONE,
    VNET_HDR,
    VNET_HDR_LEN,
    partial_vnet_header,
)
from services.vswitch.packets import ETHERTYPE_IPV4, EthernetFrame, Ipv4Packet, encode_ethernet, encode_ipv4


def frame(protocol: int, *, options: bytes = b"", flags: int = 2, offset: int = 0) -> bytes:
    packet = Ipv4Packet(
        source=bytes([192, 0, 2, 1]),
        destination=bytes([192, 0, 2, 2]),
        protocol=protocol,
        payload=b"\x00" * 40,
        options=options,
        flags=flags,
        fragment_offset=offset,
    )
    return encode_ethernet(EthernetFrame(b"\x02" * 6, b"\x04" * 6, ETHERTYPE_IPV4, encode_ipv4(packet)))


@pytest.mark.parametrize(("protocol", "checksum_offset"), [(6, 16), (17, 6)])
def test_tcp_and_udp_are_handed_over_with_a_partial_checksum(protocol: int, checksum_offset: int) -> None:
    header = partial_vnet_header(frame(protocol))
    assert len(header) == VNET_HDR_LEN
    flags, gso, _hdr_len, _gso_size, start, offset = VNET_HDR.unpack(header)
    assert (flags, gso, start, offset) == (VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 34, checksum_offset)


@pytest.mark.parametrize(
    "data",
    [
        frame(1),  # ICMP: the kernel never offloads its checksum
        frame(6, options=b"\x01\x01\x01\x01"),  # options move the TCP header
        frame(6, flags=1),  # a first fragment has no whole TCP segment
        frame(17, offset=5),  # nor does a later one
        frame(6)[:30],  # truncated
        frame(6)[:12] + b"\x86\xdd" + frame(6)[14:],  # not IPv4
    ],
)
def test_everything_else_is_handed_over_as_is(data: bytes) -> None:
    assert partial_vnet_header(data) == PLAIN_VNET_HDR
