"""The GSO virtio-net header for a TCP super-frame delivered to a kernel port (datapath/tap.py).

A frame longer than a kernel port's MTU goes to the kernel with a TCPv4 GSO header, and the kernel
cuts it (the integration tests send real ones through it). Here, with hypothesis: the header
describes the frame's own headers, every segment fits the MTU, and the frame comes back unchanged
but for its TCP checksum field, which holds the pseudo-header sum: completing it over the segment,
as the kernel does for CHECKSUM_PARTIAL, gives the checksum the frame must carry. Anything that is
not a whole TCP/IPv4 packet longer than the MTU gets no header.
"""

from __future__ import annotations

import random
import struct

from hypothesis import given
from hypothesis import strategies as st

from services.vswitch.datapath.tap import (
    VNET_F_NEEDS_CSUM,
    VNET_GSO_ECN,
    VNET_GSO_TCPV4,
    VNET_HDR,
    gso_vnet_header,
)
from services.vswitch.packets import (
    ETHERTYPE_IPV4,
    EthernetFrame,
    Ipv4Packet,
    encode_ethernet,
    encode_ipv4,
    internet_checksum,
)

SOURCE, DESTINATION = bytes([192, 0, 2, 11]), bytes([192, 0, 2, 12])
CWR = 0x80


def tcp_checksum(source: bytes, destination: bytes, segment: bytes | bytearray) -> int:
    """The TCP checksum of ``segment`` whose own checksum field is zero (RFC 793)."""
    pseudo = source + destination + struct.pack("!BBH", 0, 6, len(segment))
    return internet_checksum(pseudo + bytes(segment))


def tcp_frame(
    payload: bytes, *, ip_options: bytes = b"", tcp_options: bytes = b"", flags: int = 0x18
) -> bytes:
    offset = (20 + len(tcp_options)) // 4
    header = struct.pack("!HHIIBBHHH", 40000, 7, 1000, 1, offset << 4, flags, 65535, 0, 0) + tcp_options
    segment = bytearray(header + payload)
    struct.pack_into("!H", segment, 16, tcp_checksum(SOURCE, DESTINATION, segment))
    packet = Ipv4Packet(SOURCE, DESTINATION, 6, bytes(segment), options=ip_options)
    return encode_ethernet(EthernetFrame(b"\x02" * 6, b"\x04" * 6, ETHERTYPE_IPV4, encode_ipv4(packet)))


options = st.integers(0, 10).map(lambda words: b"\x01" * (4 * words))


@given(
    payload_size=st.integers(1, 60000),
    mtu=st.integers(576, 9000),
    ip_options=options,
    tcp_options=options,
    flags=st.sampled_from([0x10, 0x18, 0x19, 0x18 | CWR]),
    rng=st.randoms(use_true_random=False),
)
def test_a_long_tcp_frame_gets_a_header_that_cuts_it_to_the_mtu(
    payload_size: int, mtu: int, ip_options: bytes, tcp_options: bytes, flags: int, rng: random.Random
) -> None:
    payload = rng.randbytes(payload_size)
    frame = tcp_frame(payload, ip_options=ip_options, tcp_options=tcp_options, flags=flags)
    ip_length = len(frame) - 14
    cut = gso_vnet_header(frame, mtu)
    if ip_length <= mtu:
        assert cut is None
        return
    assert cut is not None
    header, copy = cut
    hdr_flags, gso, headers, size, start, offset = VNET_HDR.unpack(header)
    tcp_at = 14 + 20 + len(ip_options)
    assert hdr_flags == VNET_F_NEEDS_CSUM
    assert gso == VNET_GSO_TCPV4 | (VNET_GSO_ECN if flags & CWR else 0)
    assert (start, offset) == (tcp_at, 16)
    assert headers == tcp_at + 20 + len(tcp_options)
    # Every segment, its headers included, fits the MTU, and the segment size is the most that does.
    assert headers - 14 + size == mtu
    # The frame is unchanged but for the checksum field, which now holds the pseudo-header sum.
    assert copy[: tcp_at + 16] == frame[: tcp_at + 16]
    assert copy[tcp_at + 18 :] == frame[tcp_at + 18 :]
    seed = struct.unpack_from("!H", copy, tcp_at + 16)[0]
    # CHECKSUM_PARTIAL: the sum from csum_start to the end, over the seed, complemented, is the checksum.
    zeroed = bytearray(copy[tcp_at:])
    zeroed[16:18] = b"\x00\x00"
    assert internet_checksum(bytes(zeroed), seed) == struct.unpack_from("!H", frame, tcp_at + 16)[0]


@given(mtu=st.integers(576, 1500), size=st.integers(1600, 4000))
def test_other_frames_get_no_header(mtu: int, size: int) -> None:
    tcp = tcp_frame(bytes(size))
    udp = bytearray(tcp)
    udp[23] = 17
    fragment = bytearray(tcp)
    fragment[20] |= 0x20  # more fragments
    not_ipv4 = bytearray(tcp)
    not_ipv4[12:14] = b"\x86\xdd"
    lying = bytearray(tcp)
    struct.pack_into("!H", lying, 16, len(tcp))  # an IP length past the frame's end
    short_tcp = bytearray(tcp)
    short_tcp[14 + 20 + 12] = 4 << 4  # a TCP header of 16 bytes
    for frame in (bytes(udp), bytes(fragment), bytes(not_ipv4), bytes(lying), bytes(short_tcp), tcp[:53]):
        assert gso_vnet_header(frame, mtu) is None
    assert gso_vnet_header(tcp, mtu) is not None
