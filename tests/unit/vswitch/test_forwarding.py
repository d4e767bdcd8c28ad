"""The pure forwarding decisions over the demo tenancy, and the extension chain, without any I/O."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overland.v1 import types_pb2, vswitch_pb2
from services.common.schema import key_of
from services.common.table import TableChange
from services.vswitch.datapath import (
    ActionKind,
    Context,
    ExtensionChain,
    ExtensionError,
    Hook,
    PortInfo,
    ReplyKind,
    TableChangingError,
    Verdict,
    apply_rewrite,
    decide_from_port,
    decide_from_wire,
    inner_mtu_of,
    port_info,
    run_hooks,
)
from services.vswitch.lab import DEMO_SUBNETS, VmSpec, record_entry
from services.vswitch.packets import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    FLAG_DF,
    ArpPacket,
    DropReason,
    EthernetFrame,
    Ipv4Packet,
    decode_arp,
    decode_ethernet,
    decode_icmp,
    decode_ipv4,
    echo_request,
    encode_arp,
    encode_ethernet,
    encode_icmp,
    encode_ipv4,
    ip_to_bytes,
    mac_to_bytes,
    next_hop_mtu,
    parse_pcap,
)
from tests.unit.vswitch.forwarding_fixtures import BLUE_A, BLUE_B, PA1, PA2, RED_A, VMS, table

GATEWAY_MAC = {vsid: mac for vsid, _rdid, _prefix, _ip, mac in DEMO_SUBNETS}
PA3 = "198.18.0.3"


def port_of(spec: VmSpec) -> PortInfo:
    return PortInfo(f"tap-{spec.name}", spec.vsid, mac_to_bytes(spec.mac), ip_to_bytes(spec.ca))


def context_on(pa: str, routing: object = None) -> Context:
    """The switch of host ``pa`` with a port per demo VM that runs there."""
    ports = {(p.vsid, p.mac): p for p in (port_of(s) for s in VMS.values() if s.pa == pa)}
    return Context(routing or table(), pa, 1500, ports)  # type: ignore[arg-type]


def ip_frame(
    source: VmSpec,
    destination_ip: str,
    destination_mac: str,
    *,
    ttl: int = 64,
    size: int = 64,
    flags: int = FLAG_DF,
) -> bytes:
    icmp = encode_icmp(echo_request(1, 1, b"p" * max(size - 28, 0)))
    packet = Ipv4Packet(
        source=ip_to_bytes(source.ca),
        destination=ip_to_bytes(destination_ip),
        protocol=1,
        payload=icmp,
        ttl=ttl,
        flags=flags,
    )
    return encode_ethernet(
        EthernetFrame(
            mac_to_bytes(destination_mac), mac_to_bytes(source.mac), ETHERTYPE_IPV4, encode_ipv4(packet)
        )
    )


def arp_request(source: VmSpec, target_ip: str) -> bytes:
    arp = ArpPacket(
        ARP_REQUEST, mac_to_bytes(source.mac), ip_to_bytes(source.ca), b"\x00" * 6, ip_to_bytes(target_ip)
    )
    return encode_ethernet(
        EthernetFrame(BROADCAST_MAC, mac_to_bytes(source.mac), ETHERTYPE_ARP, encode_arp(arp))
    )


# ----- ARP -----


def test_arp_for_the_gateway_is_answered_with_the_subnet_gateway_mac() -> None:
    blue1 = VMS["blue1"]
    action = decide_from_port(context_on(PA1), port_of(blue1), arp_request(blue1, "192.0.2.1"))
    assert (action.kind, action.reply, action.port) == (ActionKind.REPLY, ReplyKind.ARP, "tap-blue1")
    frame = decode_ethernet(action.frame)
    reply = decode_arp(frame.payload)
    assert frame.destination == mac_to_bytes(blue1.mac)
    assert (reply.operation, reply.sender_mac) == (ARP_REPLY, mac_to_bytes(GATEWAY_MAC[BLUE_A]))
    assert reply.sender_ip == ip_to_bytes("192.0.2.1")


def test_arp_for_a_remote_vm_is_answered_from_the_table_not_flooded() -> None:
    blue1 = VMS["blue1"]
    action = decide_from_port(context_on(PA1), port_of(blue1), arp_request(blue1, "192.0.2.12"))
    assert action.kind is ActionKind.REPLY
    assert decode_arp(decode_ethernet(action.frame).payload).sender_mac == mac_to_bytes(VMS["blue2"].mac)


def test_arp_across_tenants_gets_the_own_tenants_answer_only() -> None:
    red1 = VMS["red1"]
    # 192.0.2.11 is blue1 and red2: red1 must learn red2's MAC.
    action = decide_from_port(context_on(PA1), port_of(red1), arp_request(red1, "192.0.2.11"))
    assert decode_arp(decode_ethernet(action.frame).payload).sender_mac == mac_to_bytes(VMS["red2"].mac)
    unknown = decide_from_port(context_on(PA1), port_of(red1), arp_request(red1, "192.0.2.99"))
    assert (unknown.kind, unknown.reason) == (ActionKind.DROP, DropReason.ARP_UNKNOWN_TARGET)


def test_arp_for_an_l2_only_record_goes_unicast_to_that_vm() -> None:
    routing = table()
    l2 = record_entry(
        BLUE_A, "rd-blue", "192.0.2.50", "02:00:00:00:0b:50", PA2, kind=types_pb2.LOOKUP_TYPE_L2_ONLY
    )
    routing.update([TableChange(key_of(l2), l2, revision=2)])
    blue1 = VMS["blue1"]
    action = decide_from_port(context_on(PA1, routing), port_of(blue1), arp_request(blue1, "192.0.2.50"))
    assert (action.kind, action.pa, action.vsid) == (ActionKind.ENCAPSULATE, PA2, BLUE_A)
    assert action.frame[0:6] == mac_to_bytes("02:00:00:00:0b:50")
    assert decode_arp(action.frame[14:]).operation == ARP_REQUEST


# ----- IPv4 from a VM -----


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.sampled_from(sorted(VMS)), st.sampled_from(sorted(VMS)))
def test_switching_by_mac_never_leaves_the_vsid(source_name: str, destination_name: str) -> None:
    source, destination = VMS[source_name], VMS[destination_name]
    context = context_on(source.pa)
    action = decide_from_port(context, port_of(source), ip_frame(source, destination.ca, destination.mac))
    if source.vsid != destination.vsid or source is destination:
        assert action.kind is ActionKind.DROP or (
            source is destination and action.port == f"tap-{source.name}"
        )
        return
    if destination.pa == source.pa:
        assert (action.kind, action.port) == (ActionKind.DELIVER, f"tap-{destination.name}")
    else:
        assert (action.kind, action.pa, action.vsid) == (
            ActionKind.ENCAPSULATE,
            destination.pa,
            destination.vsid,
        )
    assert action.cacheable


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.sampled_from(sorted(VMS)), st.sampled_from(sorted(VMS)), st.integers(2, 255))
def test_the_distributed_router_stays_inside_the_routing_domain(
    source_name: str, destination_name: str, ttl: int
) -> None:
    source, destination = VMS[source_name], VMS[destination_name]
    frame = ip_frame(source, destination.ca, GATEWAY_MAC[source.vsid], ttl=ttl)
    action = decide_from_port(context_on(source.pa), port_of(source), frame)
    if source.rdid != destination.rdid:
        # The same CA may exist in the source's own domain: then that VM is the answer, never the other.
        if action.kind is not ActionKind.DROP:
            target_mac = decode_ethernet(action.frame).destination
            owner = next(v for v in VMS.values() if mac_to_bytes(v.mac) == target_mac)
            assert owner.rdid == source.rdid
            assert owner.ca == destination.ca
        return
    assert action.kind in (ActionKind.ENCAPSULATE, ActionKind.DELIVER)
    routed = decode_ethernet(action.frame)
    packet = decode_ipv4(routed.payload)  # verifies the updated header checksum
    assert packet.ttl == ttl - 1
    assert routed.destination == mac_to_bytes(destination.mac)
    assert routed.source == mac_to_bytes(GATEWAY_MAC[destination.vsid])


def test_routing_from_blue_to_its_second_subnet_encapsulates_with_the_destination_vsid() -> None:
    blue1, blue3 = VMS["blue1"], VMS["blue3"]
    action = decide_from_port(context_on(PA1), port_of(blue1), ip_frame(blue1, blue3.ca, GATEWAY_MAC[BLUE_A]))
    assert (action.kind, action.pa, action.vsid) == (ActionKind.ENCAPSULATE, blue3.pa, BLUE_B)
    assert action.rewrite == mac_to_bytes(blue3.mac) + mac_to_bytes(GATEWAY_MAC[BLUE_B])


def test_red_cannot_route_to_blues_second_subnet() -> None:
    red1 = VMS["red1"]
    action = decide_from_port(
        context_on(PA1), port_of(red1), ip_frame(red1, "198.51.100.13", GATEWAY_MAC[RED_A])
    )
    assert (action.kind, action.reason) == (ActionKind.DROP, DropReason.NO_ROUTE)


def test_ttl_expires_at_the_router() -> None:
    blue1 = VMS["blue1"]
    action = decide_from_port(
        context_on(PA1), port_of(blue1), ip_frame(blue1, "198.51.100.13", GATEWAY_MAC[BLUE_A], ttl=1)
    )
    assert action.reason is DropReason.TTL_EXCEEDED


def test_spoofed_sources_from_a_vm_are_dropped() -> None:
    blue1, blue2 = VMS["blue1"], VMS["blue2"]
    frame = bytearray(ip_frame(blue1, blue2.ca, blue2.mac))
    wrong_mac = bytes(frame[:6]) + mac_to_bytes(VMS["red1"].mac) + bytes(frame[12:])
    assert (
        decide_from_port(context_on(PA1), port_of(blue1), wrong_mac).reason is DropReason.SOURCE_MAC_SPOOFED
    )
    forged = VmSpec("x", PA1, BLUE_A, "rd-blue", "192.0.2.99", blue1.mac, "")
    assert (
        decide_from_port(context_on(PA1), port_of(blue1), ip_frame(forged, blue2.ca, blue2.mac)).reason
        is DropReason.SOURCE_IP_SPOOFED
    )


def test_tagged_broadcast_and_unknown_frames_are_dropped_with_reasons() -> None:
    blue1, blue2 = VMS["blue1"], VMS["blue2"]
    frame = ip_frame(blue1, blue2.ca, blue2.mac)
    tagged = frame[:12] + struct.pack("!HH", 0x8100, 7) + frame[12:]
    port = port_of(blue1)
    context = context_on(PA1)
    assert decide_from_port(context, port, tagged).reason is DropReason.VLAN_TAGGED
    assert decide_from_port(context, port, BROADCAST_MAC + frame[6:]).reason is DropReason.BROADCAST
    ipv6 = frame[:12] + b"\x86\xdd" + frame[14:]
    assert decide_from_port(context, port, ipv6).reason is DropReason.UNSUPPORTED_ETHERTYPE
    unknown = mac_to_bytes("02:00:00:00:ee:ee") + frame[6:]
    assert decide_from_port(context, port, unknown).reason is DropReason.UNKNOWN_DESTINATION
    assert decide_from_port(context, port, frame[:20]).reason is DropReason.TRUNCATED


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.integers(110, 9000))
def test_frames_over_the_inner_mtu_with_df_get_fragmentation_needed(pa_mtu: int) -> None:
    blue1, blue2 = VMS["blue1"], VMS["blue2"]
    context = Context(table(), PA1, pa_mtu, {})
    inner_mtu = inner_mtu_of(pa_mtu)
    fits = decide_from_port(context, port_of(blue1), ip_frame(blue1, blue2.ca, blue2.mac, size=inner_mtu))
    assert fits.kind is ActionKind.ENCAPSULATE
    big = ip_frame(blue1, blue2.ca, blue2.mac, size=inner_mtu + 1)
    action = decide_from_port(context, port_of(blue1), big)
    assert (action.kind, action.reply) == (ActionKind.REPLY, ReplyKind.FRAG_NEEDED)
    reply = decode_ipv4(decode_ethernet(action.frame).payload)
    assert reply.destination == ip_to_bytes(blue1.ca)
    message = decode_icmp(reply.payload)
    assert (message.type, message.code, next_hop_mtu(message)) == (3, 4, inner_mtu)
    assert message.payload == big[14 : 14 + 28]
    # Without DF the outer packet is fragmented instead; a TSO frame is judged by its segment size.
    assert (
        decide_from_port(
            context, port_of(blue1), ip_frame(blue1, blue2.ca, blue2.mac, size=inner_mtu + 1, flags=0)
        ).kind
        is ActionKind.ENCAPSULATE
    )
    assert (
        decide_from_port(context, port_of(blue1), big, segment_length=inner_mtu).kind
        is ActionKind.ENCAPSULATE
    )


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.integers(2, 255), st.binary(min_size=4, max_size=4), st.binary(min_size=12, max_size=12))
def test_apply_rewrite_keeps_the_header_checksum_valid(ttl: int, address: bytes, macs: bytes) -> None:
    frame = encode_ethernet(
        EthernetFrame(
            b"\x02" * 6,
            b"\x04" * 6,
            ETHERTYPE_IPV4,
            encode_ipv4(Ipv4Packet(source=address, destination=address, protocol=6, payload=b"x", ttl=ttl)),
        )
    )
    routed = apply_rewrite(frame, macs)
    assert routed[:12] == macs
    assert decode_ipv4(routed[14:]).ttl == ttl - 1


def test_port_info_comes_from_the_record_on_this_host() -> None:
    routing = table()
    blue1 = VMS["blue1"]
    info = port_info(routing, "p", BLUE_A, mac_to_bytes(blue1.mac), PA1)
    assert (info.known, info.ca) == (True, ip_to_bytes(blue1.ca))
    assert not port_info(routing, "p", BLUE_A, mac_to_bytes(blue1.mac), PA2).known
    unknown = PortInfo("p", BLUE_A, mac_to_bytes(blue1.mac), known=False)
    assert (
        decide_from_port(context_on(PA1), unknown, ip_frame(blue1, "192.0.2.12", VMS["blue2"].mac)).reason
        is DropReason.PORT_WITHOUT_RECORD
    )


# ----- from the wire -----


def wire_frame(source: VmSpec, destination: VmSpec) -> bytes:
    return ip_frame(source, destination.ca, destination.mac)


def test_received_frames_are_delivered_to_the_port_of_their_vsid_and_mac() -> None:
    blue1, blue2 = VMS["blue1"], VMS["blue2"]
    action = decide_from_wire(context_on(PA1), ip_to_bytes(PA2), BLUE_A, wire_frame(blue2, blue1))
    assert (action.kind, action.port, action.cacheable) == (ActionKind.DELIVER, "tap-blue1", True)


def test_received_routed_frames_pass_the_reverse_path_check() -> None:
    blue1, blue3 = VMS["blue1"], VMS["blue3"]
    frame = apply_rewrite(
        wire_frame(blue3, blue1), mac_to_bytes(blue1.mac) + mac_to_bytes(GATEWAY_MAC[BLUE_A])
    )
    assert decide_from_wire(context_on(PA1), ip_to_bytes(blue3.pa), BLUE_A, frame).kind is ActionKind.DELIVER


def test_received_spoofed_wrong_vsid_and_tagged_frames_are_dropped() -> None:
    blue1, blue2 = VMS["blue1"], VMS["blue2"]
    context = context_on(PA1)
    frame = wire_frame(blue2, blue1)
    assert decide_from_wire(context, ip_to_bytes(PA3), BLUE_A, frame).reason is DropReason.UNKNOWN_SOURCE_PA
    assert decide_from_wire(context, ip_to_bytes(PA2), RED_A, frame).reason is DropReason.WRONG_VSID
    tagged = frame[:12] + struct.pack("!HH", 0x8100, 7) + frame[12:]
    assert decide_from_wire(context, ip_to_bytes(PA2), BLUE_A, tagged).reason is DropReason.VLAN_TAGGED
    assert decide_from_wire(context, ip_to_bytes(PA2), 0xABCDE, frame).reason is DropReason.UNKNOWN_VSID
    nobody = mac_to_bytes("02:00:00:00:ee:ee") + frame[6:]
    assert decide_from_wire(context, ip_to_bytes(PA2), BLUE_A, nobody).reason is DropReason.NO_PORT


def test_a_table_changed_under_a_decision_raises_the_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a dict iteration meets when another thread updates the table without the datapath's lock.
    def changing(*_args: object) -> None:
        raise RuntimeError("dictionary changed size during iteration")

    blue1, blue2, blue3 = VMS["blue1"], VMS["blue2"], VMS["blue3"]
    routing = table()
    monkeypatch.setattr(routing, "record", changing)
    context = context_on(PA1, routing)
    with pytest.raises(TableChangingError):
        decide_from_port(context, port_of(blue1), ip_frame(blue1, blue3.ca, GATEWAY_MAC[BLUE_A]))
    with pytest.raises(TableChangingError):
        decide_from_wire(context, ip_to_bytes(PA2), BLUE_A, wire_frame(blue2, blue1))


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.sampled_from(sorted(VMS)), st.sampled_from(sorted(VMS)), st.sampled_from((PA1, PA2, PA3)))
def test_only_the_pa_a_source_lives_on_may_send_for_it(
    source_name: str, destination_name: str, pa: str
) -> None:
    source, destination = VMS[source_name], VMS[destination_name]
    context = context_on(destination.pa)
    action = decide_from_wire(context, ip_to_bytes(pa), destination.vsid, wire_frame(source, destination))
    # The frame is accepted only if, inside the destination's routing domain, its source CA lives on pa.
    owners = [v for v in VMS.values() if v.rdid == destination.rdid and v.ca == source.ca and v.pa == pa]
    assert (action.kind is ActionKind.DELIVER) == bool(owners)


# ----- extensions -----


def extension(name: str, kind: int, order: int = 0, **settings: str) -> vswitch_pb2.Extension:
    return vswitch_pb2.Extension(name=name, kind=kind, order=order, enabled=True, settings=settings)  # type: ignore[arg-type]


Kind = vswitch_pb2.Extension.Kind


def test_the_chain_runs_in_order_and_the_first_verdict_wins(tmp_path: Path) -> None:
    chain = ExtensionChain()
    frame = ip_frame(VMS["blue1"], "192.0.2.12", VMS["blue2"].mac)
    chain.configure(extension("cap", Kind.KIND_CAPTURE, 0, path=str(tmp_path / "c.pcap")))
    chain.configure(extension("steer", Kind.KIND_FORWARD, 2, redirect_port="tap-ids", protocols="icmp"))
    chain.configure(extension("deny", Kind.KIND_FILTER, 1, destinations="192.0.2.12/32", direction="ingress"))
    assert [e.name for e in chain.configs()] == ["cap", "deny", "steer"]
    assert run_hooks(chain.ingress, Hook.INGRESS, "tap-blue1", frame).verdict is Verdict.DROP
    # The filter runs at ingress only: at delivery the forward extension redirects ICMP.
    delivered = run_hooks(chain.delivery, Hook.DELIVERY, "tap-blue2", frame)
    assert (delivered.verdict, delivered.port) == (Verdict.REDIRECT, "tap-ids")
    chain.configure(extension("deny", Kind.KIND_FILTER, 1, destinations="203.0.113.0/24"))
    assert run_hooks(chain.ingress, Hook.INGRESS, "tap-blue1", frame).verdict is Verdict.REDIRECT
    chain.close()
    linktype, records = parse_pcap((tmp_path / "c.pcap").read_bytes())
    assert linktype == 1
    # Three runs of the chain (ingress, delivery, ingress), each captured before any verdict.
    assert [data for _ts, data in records] == [frame] * 3


def test_disabled_extensions_do_not_run(tmp_path: Path) -> None:
    chain = ExtensionChain()
    config = extension("deny", Kind.KIND_FILTER, protocols="icmp")
    config.enabled = False
    chain.configure(config)
    assert chain.ingress == ()
    assert [e.enabled for e in chain.configs()] == [False]


@pytest.mark.parametrize(
    "config",
    [
        extension("", Kind.KIND_FILTER),
        extension("x", Kind.KIND_UNSPECIFIED),
        extension("x", Kind.KIND_CAPTURE),
        extension("x", Kind.KIND_FORWARD),
        extension("x", Kind.KIND_FILTER, protocols="sctp-ish"),
        extension("x", Kind.KIND_FILTER, sources="192.0.2.0/33"),
        extension("x", Kind.KIND_FILTER, direction="sideways"),
    ],
)
def test_bad_extension_settings_are_rejected(config: vswitch_pb2.Extension) -> None:
    with pytest.raises(ExtensionError):
        ExtensionChain().configure(config)
