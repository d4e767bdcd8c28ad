"""Property tests of the pure packet codecs: round trips, checksums and the NVGRE key layout."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.vswitch.packets import (
    ARP_REPLY,
    ARP_REQUEST,
    CODE_FRAGMENTATION_NEEDED,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    FLOW_ADDRESSES_AT,
    FLOW_ADDRESSES_END,
    FLOW_ETHERTYPE_AT,
    FLOW_MAC_END,
    FLOW_PORTS_END,
    FLOW_TTL_AT,
    FLOW_VSID_AT,
    FLOW_VSID_END,
    GRE_FLAGS_KEY,
    ICMP_DEST_UNREACHABLE,
    LINKTYPE_ETHERNET,
    MAX_VSID,
    MIN_VSID,
    NVGRE_OVERHEAD,
    PROTO_GRE,
    PROTO_TRANSPARENT_ETHERNET,
    PROTO_UDP,
    ArpPacket,
    DecodeError,
    DropReason,
    EncodeError,
    EthernetFrame,
    IcmpMessage,
    Ipv4Packet,
    arp_reply,
    checksum_update,
    decapsulate,
    decode_arp,
    decode_ethernet,
    decode_icmp,
    decode_ipv4,
    echo_fields,
    echo_request,
    enable_vector_sums,
    encapsulate,
    encode_arp,
    encode_ethernet,
    encode_icmp,
    encode_ipv4,
    flow_id,
    fragmentation_needed,
    gre_header,
    internet_checksum,
    ip_to_bytes,
    ip_to_str,
    mac_to_bytes,
    mac_to_str,
    next_hop_mtu,
    ones_complement_sum,
    parse_nvgre,
    parse_pcap,
    pcap_file_header,
    pcap_record,
    scalar_ones_complement_sum,
)

macs = st.binary(min_size=6, max_size=6)
ipv4s = st.binary(min_size=4, max_size=4)
vsids = st.integers(MIN_VSID, MAX_VSID)
payloads = st.binary(max_size=300)


def naive_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@st.composite
def ipv4_packets(draw: st.DrawFn, payload: st.SearchStrategy[bytes] = payloads) -> Ipv4Packet:
    return Ipv4Packet(
        source=draw(ipv4s),
        destination=draw(ipv4s),
        protocol=draw(st.integers(0, 255)),
        payload=draw(payload),
        ttl=draw(st.integers(0, 255)),
        tos=draw(st.integers(0, 255)),
        identification=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 7)),
        fragment_offset=draw(st.integers(0, 0x1FFF)),
        options=draw(st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4])),
    )


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.binary(max_size=2000), st.integers(0, 0xFFFF))
def test_ones_complement_sum_matches_the_word_loop(data: bytes, initial: int) -> None:
    padded = data + b"\x00" * (len(data) % 2)
    assert ones_complement_sum(data, initial) == naive_sum(padded + initial.to_bytes(2, "big"))


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.sampled_from((65000, 64999, 1501)), st.integers(0, 2**32))
def test_checksums_of_tso_sized_frames_match_the_word_loop(size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    padded = data + b"\x00" * (size % 2)
    # Both paths: the big-int one a restarting datapath uses until numpy is loaded, and numpy's.
    assert scalar_ones_complement_sum(memoryview(bytearray(data))) == naive_sum(padded)
    enable_vector_sums()
    assert ones_complement_sum(memoryview(bytearray(data))) == naive_sum(padded)
    assert internet_checksum(padded + internet_checksum(padded).to_bytes(2, "big")) == 0


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.binary(min_size=20, max_size=60).map(lambda b: b[: len(b) - len(b) % 2]), st.data())
def test_incremental_checksum_update_equals_recomputing(data: bytes, draw: st.DataObject) -> None:
    index = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    new_word = draw.draw(st.integers(0, 0xFFFF))
    old_word = int.from_bytes(data[index : index + 2], "big")
    changed = data[:index] + new_word.to_bytes(2, "big") + data[index + 2 :]
    updated = checksum_update(internet_checksum(data), old_word, new_word)
    # 0x0000 and 0xFFFF are the same one's complement number.
    assert updated % 0xFFFF == internet_checksum(changed) % 0xFFFF


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(macs, macs, st.integers(0, 0xFFFF).filter(lambda t: t not in (0x8100, 0x88A8)), payloads)
def test_ethernet_round_trip(destination: bytes, source: bytes, ethertype: int, payload: bytes) -> None:
    frame = EthernetFrame(destination, source, ethertype, payload)
    assert decode_ethernet(encode_ethernet(frame)) == frame


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(macs, macs, st.integers(0, 0x0FFF), payloads)
def test_tagged_ethernet_round_trip_reports_the_vlan(
    destination: bytes, source: bytes, vlan: int, payload: bytes
) -> None:
    frame = EthernetFrame(destination, source, ETHERTYPE_IPV4, payload, vlan)
    assert decode_ethernet(encode_ethernet(frame)) == frame


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(ipv4_packets())
def test_ipv4_round_trip_with_a_valid_header_checksum(packet: Ipv4Packet) -> None:
    encoded = encode_ipv4(packet)
    assert internet_checksum(encoded[: packet.header_length]) == 0
    assert decode_ipv4(encoded) == packet
    # Ethernet padding after the packet is ignored.
    assert decode_ipv4(encoded + b"\x00" * 10) == packet


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(ipv4_packets(), st.integers(0, 19))
def test_ipv4_corrupted_header_fails_the_checksum(packet: Ipv4Packet, index: int) -> None:
    encoded = bytearray(encode_ipv4(packet))
    encoded[index] ^= 0x10
    with pytest.raises(DecodeError):
        decode_ipv4(bytes(encoded))


def test_ipv4_rejects_out_of_range_values() -> None:
    with pytest.raises(EncodeError):
        encode_ipv4(Ipv4Packet(source=b"\x00" * 4, destination=b"\x00" * 4, protocol=1, payload=b"", ttl=256))
    with pytest.raises(EncodeError):
        encode_ipv4(Ipv4Packet(source=b"\x00" * 3, destination=b"\x00" * 4, protocol=1, payload=b""))


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.sampled_from((ARP_REQUEST, ARP_REPLY)), macs, ipv4s, macs, ipv4s)
def test_arp_round_trip_and_reply(operation: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> None:
    packet = ArpPacket(operation, sha, spa, tha, tpa)
    assert decode_arp(encode_arp(packet)) == packet
    answer = b"\x02\x00\x00\x00\x00\x01"
    reply = arp_reply(packet, answer)
    assert (reply.operation, reply.sender_mac, reply.sender_ip) == (ARP_REPLY, answer, tpa)
    assert (reply.target_mac, reply.target_ip) == (sha, spa)


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), payloads)
def test_icmp_echo_round_trip(identifier: int, sequence: int, data: bytes) -> None:
    message = echo_request(identifier, sequence, data)
    decoded = decode_icmp(encode_icmp(message))
    assert decoded == message
    assert echo_fields(decoded) == (identifier, sequence)


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(ipv4_packets(st.binary(min_size=8, max_size=100)), st.integers(68, 9000))
def test_fragmentation_needed_quotes_the_header_and_carries_the_mtu(packet: Ipv4Packet, mtu: int) -> None:
    original = encode_ipv4(packet)
    message = decode_icmp(encode_icmp(fragmentation_needed(original, mtu)))
    assert (message.type, message.code) == (ICMP_DEST_UNREACHABLE, CODE_FRAGMENTATION_NEEDED)
    assert next_hop_mtu(message) == mtu
    assert message.payload == original[: packet.header_length + 8]


def test_icmp_rejects_bad_checksums_and_short_messages() -> None:
    encoded = bytearray(encode_icmp(IcmpMessage(8, 0, b"\x00\x01\x00\x02", b"abc")))
    encoded[-1] ^= 1
    with pytest.raises(DecodeError) as error:
        decode_icmp(bytes(encoded))
    assert error.value.reason is DropReason.BAD_CHECKSUM
    with pytest.raises(DecodeError):
        decode_icmp(b"\x08\x00")


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(ipv4s, ipv4s, vsids, macs, macs, payloads, st.integers(0, 255))
def test_nvgre_round_trip_and_key_layout(
    source: bytes, destination: bytes, vsid: int, dst_mac: bytes, src_mac: bytes, payload: bytes, ttl: int
) -> None:
    inner = encode_ethernet(EthernetFrame(dst_mac, src_mac, ETHERTYPE_IPV4, payload))
    outer = encapsulate(source, destination, vsid, inner, ttl=ttl)
    assert len(outer) == len(inner) + NVGRE_OVERHEAD - 14
    ip = decode_ipv4(outer)
    assert ip.protocol == PROTO_GRE
    flags, protocol, key = struct.unpack("!HHI", ip.payload[:8])
    assert (flags, protocol) == (GRE_FLAGS_KEY, PROTO_TRANSPARENT_ETHERNET)
    assert key == vsid << 8 | flow_id(inner)
    packet = decapsulate(outer)
    assert (packet.source_pa, packet.destination_pa, packet.vsid, packet.inner) == (
        source,
        destination,
        vsid,
        inner,
    )
    assert packet.flow_id == flow_id(inner)


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.integers(0, MIN_VSID - 1) | st.integers(MAX_VSID + 1, 0xFFFFFFF))
def test_reserved_vsids_cannot_be_encoded(vsid: int) -> None:
    with pytest.raises(EncodeError):
        gre_header(vsid, 0)


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(ipv4s, ipv4s, st.integers(1, 0xFFFF), st.integers(1, 0xFFFF), st.binary(max_size=40))
def test_flow_id_is_stable_per_flow_and_ignores_the_payload(
    source: bytes, destination: bytes, sport: int, dport: int, data: bytes
) -> None:
    def frame(payload: bytes) -> bytes:
        tcp = struct.pack("!HH", sport, dport) + payload
        ip = encode_ipv4(Ipv4Packet(source=source, destination=destination, protocol=6, payload=tcp))
        return encode_ethernet(EthernetFrame(b"\x02" * 6, b"\x04" * 6, ETHERTYPE_IPV4, ip))

    assert flow_id(frame(data)) == flow_id(frame(b"other payload"))
    assert 0 <= flow_id(frame(data)) <= 0xFF


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(
    macs,
    macs,
    ipv4s,
    ipv4s,
    st.integers(0, 255),
    st.sampled_from((6, PROTO_UDP)),
    st.binary(min_size=4),
    st.binary(),
    vsids,
)
def test_flow_key_offsets_locate_the_fields_the_codecs_write_and_flow_id_reads(
    dst_mac: bytes,
    src_mac: bytes,
    source: bytes,
    destination: bytes,
    ttl: int,
    protocol: int,
    ports_and_payload: bytes,
    other_payload: bytes,
    vsid: int,
) -> None:
    def frame(payload: bytes, identification: int) -> bytes:
        ip = Ipv4Packet(source, destination, protocol, payload, ttl=ttl, identification=identification)
        return encode_ethernet(EthernetFrame(dst_mac, src_mac, ETHERTYPE_IPV4, encode_ipv4(ip)))

    inner = frame(ports_and_payload, 1)
    assert inner[:FLOW_MAC_END] == dst_mac + src_mac + inner[FLOW_ETHERTYPE_AT:FLOW_MAC_END]
    assert int.from_bytes(inner[FLOW_ETHERTYPE_AT:FLOW_MAC_END], "big") == ETHERTYPE_IPV4
    assert inner[FLOW_ADDRESSES_AT:FLOW_ADDRESSES_END] == source + destination
    assert inner[FLOW_ADDRESSES_END:FLOW_PORTS_END] == ports_and_payload[:4]
    assert inner[FLOW_TTL_AT] == ttl
    # What the port-side key holds is all flow_id reads (within one IP protocol): a frame of the same
    # flow with another payload and header checksum gets the cached GRE header's FlowID.
    same_flow = frame(ports_and_payload[:4] + other_payload, 2)
    assert same_flow[:FLOW_MAC_END] + same_flow[FLOW_ADDRESSES_AT:FLOW_PORTS_END] == (
        inner[:FLOW_MAC_END] + inner[FLOW_ADDRESSES_AT:FLOW_PORTS_END]
    )
    assert flow_id(same_flow) == flow_id(inner)
    outer = encapsulate(b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02", vsid, inner)
    _source, _key, at = parse_nvgre(outer)
    assert outer[at + FLOW_VSID_AT : at + FLOW_VSID_END] == vsid.to_bytes(3, "big")


def test_flow_id_spreads_flows_over_many_values() -> None:
    ids = set()
    for port in range(1000, 1256):
        tcp = struct.pack("!HH", port, 80)
        ip = encode_ipv4(
            Ipv4Packet(source=b"\xc0\x00\x02\x01", destination=b"\xc0\x00\x02\x02", protocol=6, payload=tcp)
        )
        ids.add(flow_id(encode_ethernet(EthernetFrame(b"\x02" * 6, b"\x04" * 6, ETHERTYPE_IPV4, ip))))
    assert len(ids) > 128


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.lists(st.tuples(st.integers(0, 2**32 * 10**9 - 1), st.binary(max_size=200)), max_size=10))
def test_pcap_round_trip(records: list[tuple[int, bytes]]) -> None:
    content = pcap_file_header(LINKTYPE_ETHERNET) + b"".join(pcap_record(ts, data) for ts, data in records)
    assert parse_pcap(content) == (LINKTYPE_ETHERNET, records)


def test_pcap_timestamps_past_2106_are_refused() -> None:
    with pytest.raises(EncodeError):
        pcap_record(2**32 * 10**9, b"")


def test_pcap_snaplen_truncates_the_capture_not_the_original_length() -> None:
    record = pcap_record(5, b"x" * 100, snaplen=64)
    assert struct.unpack("<IIII", record[:16]) == (0, 5, 64, 100)


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(macs, ipv4s)
def test_text_addresses_round_trip(mac: bytes, ip: bytes) -> None:
    assert mac_to_bytes(mac_to_str(mac)) == mac
    assert ip_to_bytes(ip_to_str(ip)) == ip


@pytest.mark.parametrize("bad", ["", "1.2.3", "1.2.3.4.5", "a.b.c.d", "300.1.1.1"])
def test_bad_ipv4_text_is_an_encode_error(bad: str) -> None:
    with pytest.raises(EncodeError):
        ip_to_bytes(bad)


@pytest.mark.parametrize("bad", ["", "02:00:00:00:00", "zz:00:00:00:00:00", "02:00:00:00:00:00:00"])
def test_bad_mac_text_is_an_encode_error(bad: str) -> None:
    with pytest.raises(EncodeError):
        mac_to_bytes(bad)


def test_arp_for_other_protocols_is_rejected() -> None:
    good = encode_arp(ArpPacket(ARP_REQUEST, b"\x02" * 6, b"\x01" * 4, b"\x00" * 6, b"\x02" * 4))
    with pytest.raises(DecodeError) as error:
        decode_arp(good[:2] + b"\x86\xdd" + good[4:])
    assert error.value.reason is DropReason.BAD_ARP
    assert ETHERTYPE_ARP == 0x0806
