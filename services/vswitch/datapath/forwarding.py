"""Pure forwarding decisions of the vswitch: a frame and the routing table in, an ``Action`` out (no I/O).

From a VM port: ARP is answered from the table (gateway IP -> the subnet's gateway MAC; STATIC and
GATEWAY_WILDCARD records -> their MAC; an L2_ONLY record's MAC is authoritative but not its CA, so the
request is sent unicast to that VM to answer itself, never flooded). IPv4 to the subnet's gateway MAC
goes through the distributed router (``select_next_hop``: other subnets of the routing domain, customer
routes, wildcard gateways; TTL decrement, source MAC = the destination subnet's gateway MAC); other
unicast is switched by MAC inside the VSID. Frames whose IP packet does not fit the PA MTU minus the
NVGRE overhead get ICMP "fragmentation needed" back when DF is set.

From the wire: the inner frame must be untagged, for a local port of that VSID, and its source must
live on the PA it came from (a reverse-path check through the same ``select_next_hop``).

A decision made while another thread changes the table (an update without the datapath's table lock)
can meet a dict that changed size under an iteration: it raises ``TableChangingError`` instead.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from overland.v1 import types_pb2
from services.common.routing import select_next_hop
from services.common.table import RoutingTable
from services.vswitch.datapath.errors import TableChangingError
from services.vswitch.packets import (
    ARP_REPLY,
    ARP_REQUEST,
    ETHERNET_HEADER_LEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    NVGRE_OVERHEAD,
    PROTO_ICMP,
    VLAN_ETHERTYPES,
    ArpPacket,
    DecodeError,
    DropReason,
    EncodeError,
    Ipv4Packet,
    arp_reply,
    checksum_update,
    decode_arp,
    decode_ipv4,
    encode_arp,
    encode_icmp,
    encode_ipv4,
    ethernet_header,
    fragmentation_needed,
    ip_to_bytes,
    ip_to_str,
    is_multicast_mac,
    mac_to_bytes,
    mac_to_str,
)


class ActionKind(enum.Enum):
    DELIVER = "deliver"
    ENCAPSULATE = "encapsulate"
    REPLY = "reply"
    DROP = "drop"


class ReplyKind(enum.Enum):
    NONE = ""
    ARP = "arp_replies"
    FRAG_NEEDED = "icmp_frag_needed"


@dataclass(frozen=True, slots=True)
class PortInfo:
    """What the switch knows about a VM port from its lookup record.

    ``known`` is false when no record on this host holds the port's VSID and MAC: such a port sends
    nothing. ``ca`` is the only source IP the VM may use; ``None`` lets it use any (a GATEWAY_WILDCARD
    record routes for others, an L2_ONLY record's CA is not authoritative).
    """

    name: str
    vsid: int
    mac: bytes
    ca: bytes | None = None
    known: bool = True


@dataclass(frozen=True, slots=True)
class Action:
    """A decision. ``frame`` is what to send (possibly rewritten); ``cacheable`` says the same decision
    holds for every frame with the same MAC header and IP addresses (the datapath's flow cache key),
    with ``rewrite`` (new 12-byte MAC header plus TTL decrement) applied to each."""

    kind: ActionKind
    frame: bytes = b""
    port: str = ""
    pa: str = ""
    vsid: int = 0
    reason: DropReason | None = None
    reply: ReplyKind = ReplyKind.NONE
    rewrite: bytes = b""
    cacheable: bool = False


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a decision reads: the table, this host's PA and MTU, and the local ports."""

    table: RoutingTable
    local_pa: str
    pa_mtu: int
    ports_by_mac: Mapping[tuple[int, bytes], PortInfo]

    @property
    def inner_mtu(self) -> int:
        return self.pa_mtu - NVGRE_OVERHEAD


def drop(reason: DropReason) -> Action:
    return Action(ActionKind.DROP, reason=reason)


def port_info(table: RoutingTable, name: str, vsid: int, mac: bytes, local_pa: str) -> PortInfo:
    """A port as its lookup record on this host describes it (unknown without one)."""
    record = table.record_by_mac(vsid, mac_to_str(mac))
    if record is None or record.pa != local_pa:
        return PortInfo(name, vsid, mac, known=False)
    free_source = record.type in (types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD, types_pb2.LOOKUP_TYPE_L2_ONLY)
    return PortInfo(name, vsid, mac, None if free_source else ip_to_bytes(record.ca))


def inner_mtu_of(pa_mtu: int) -> int:
    """The MTU VMs should use on a PA network of ``pa_mtu`` (RFC 7637 overhead: 42 bytes)."""
    return pa_mtu - NVGRE_OVERHEAD


# ----- from a VM port -----


def decide_from_port(
    context: Context, port: PortInfo, frame: bytes, segment_length: int | None = None
) -> Action:
    """What to do with ``frame`` sent by the VM on ``port``.

    ``segment_length`` is the size of the IP packets a TSO super-frame will be cut into (its headers
    plus the GSO size); it replaces the frame's own size in the MTU check.
    """
    if len(frame) < ETHERNET_HEADER_LEN:
        return drop(DropReason.TRUNCATED)
    if not port.known:
        return drop(DropReason.PORT_WITHOUT_RECORD)
    if frame[6:12] != port.mac:
        return drop(DropReason.SOURCE_MAC_SPOOFED)
    ethertype = frame[12] << 8 | frame[13]
    if ethertype in VLAN_ETHERTYPES:
        return drop(DropReason.VLAN_TAGGED)
    try:
        if ethertype == ETHERTYPE_ARP:
            return _arp_from_port(context, port, frame)
        if ethertype == ETHERTYPE_IPV4:
            return _ipv4_from_port(context, port, frame, segment_length)
    except DecodeError as error:
        return drop(error.reason)
    except RuntimeError as error:
        raise TableChangingError(f"the table changed under a decision: {error}") from error
    return drop(DropReason.UNSUPPORTED_ETHERTYPE)


def _arp_from_port(context: Context, port: PortInfo, frame: bytes) -> Action:
    arp = decode_arp(frame[ETHERNET_HEADER_LEN:])
    if arp.sender_mac != port.mac:
        return drop(DropReason.SOURCE_MAC_SPOOFED)
    if port.ca is not None and arp.sender_ip not in (port.ca, b"\x00" * 4):
        return drop(DropReason.SOURCE_IP_SPOOFED)
    if arp.operation == ARP_REPLY:
        # Only an L2_ONLY VM answering a request we sent it unicast has a reason to reply.
        return _switch_by_mac(context, port, frame, frame[0:6], cacheable=False)
    table = context.table
    subnet = table.subnet(port.vsid)
    if subnet is None:
        return drop(DropReason.UNKNOWN_VSID)
    target = ip_to_str(arp.target_ip)
    if subnet.gateway_ip and subnet.gateway_mac and target == subnet.gateway_ip:
        return _arp_answer(port, arp, mac_to_bytes(subnet.gateway_mac))
    record = table.record(port.vsid, target)
    if record is None:
        return drop(DropReason.ARP_UNKNOWN_TARGET)
    if record.type == types_pb2.LOOKUP_TYPE_L2_ONLY:
        target_mac = mac_to_bytes(record.mac)
        unicast = target_mac + frame[6:]
        return _switch_by_mac(context, port, unicast, target_mac, cacheable=False)
    return _arp_answer(port, arp, mac_to_bytes(record.mac))


def _arp_answer(port: PortInfo, request: ArpPacket, answer_mac: bytes) -> Action:
    if request.operation != ARP_REQUEST:
        return drop(DropReason.BAD_ARP)
    reply = encode_arp(arp_reply(request, answer_mac))
    frame = ethernet_header(port.mac, answer_mac, ETHERTYPE_ARP) + reply
    return Action(ActionKind.REPLY, frame=frame, port=port.name, reply=ReplyKind.ARP)


def _ipv4_from_port(context: Context, port: PortInfo, frame: bytes, segment_length: int | None) -> Action:
    packet = decode_ipv4(frame[ETHERNET_HEADER_LEN:])
    if port.ca is not None and packet.source != port.ca:
        return drop(DropReason.SOURCE_IP_SPOOFED)
    destination_mac = frame[0:6]
    if is_multicast_mac(destination_mac):
        return drop(DropReason.BROADCAST)
    subnet = context.table.subnet(port.vsid)
    if subnet is None:
        return drop(DropReason.UNKNOWN_VSID)
    if subnet.gateway_mac and destination_mac == mac_to_bytes(subnet.gateway_mac):
        action = _route(context, port, frame, packet)
    else:
        action = _switch_by_mac(context, port, frame, destination_mac, cacheable=True)
    if action.kind is ActionKind.ENCAPSULATE:
        size = segment_length if segment_length is not None else len(frame) - ETHERNET_HEADER_LEN
        if size > context.inner_mtu and packet.dont_fragment:
            return _frag_needed(context, port, subnet, frame, packet)
    return action


def _switch_by_mac(
    context: Context, port: PortInfo, frame: bytes, destination_mac: bytes, *, cacheable: bool
) -> Action:
    """Same-VSID unicast: the record holding the destination MAC says where it lives."""
    record = context.table.record_by_mac(port.vsid, mac_to_str(destination_mac))
    if record is None:
        return drop(DropReason.UNKNOWN_DESTINATION)
    return _to_record(context, record, frame, b"", cacheable=cacheable)


def _route(context: Context, port: PortInfo, frame: bytes, packet: Ipv4Packet) -> Action:
    """The distributed router: next hop from the table, MACs rewritten, TTL decremented."""
    hop = select_next_hop(
        context.table,
        vsid=port.vsid,
        source_ca=ip_to_str(packet.source),
        destination_ca=ip_to_str(packet.destination),
    )
    if not hop.found or hop.record is None:
        return drop(DropReason.NO_ROUTE)
    if packet.ttl <= 1:
        return drop(DropReason.TTL_EXCEEDED)
    destination_subnet = context.table.subnet(hop.vsid)
    if destination_subnet is None or not destination_subnet.gateway_mac:
        return drop(DropReason.NO_ROUTE)
    rewrite = mac_to_bytes(hop.mac) + mac_to_bytes(destination_subnet.gateway_mac)
    return _to_record(context, hop.record, apply_rewrite(frame, rewrite), rewrite, cacheable=True)


def _to_record(
    context: Context, record: types_pb2.LookupRecord, frame: bytes, rewrite: bytes, *, cacheable: bool
) -> Action:
    if record.rule == types_pb2.LOOKUP_RULE_NONE:
        return drop(DropReason.TRANSLATION_NONE)
    if record.pa == context.local_pa:
        local = context.ports_by_mac.get((record.vsid, mac_to_bytes(record.mac)))
        if local is None:
            return drop(DropReason.NO_PORT)
        return Action(ActionKind.DELIVER, frame=frame, port=local.name, rewrite=rewrite, cacheable=cacheable)
    return Action(
        ActionKind.ENCAPSULATE,
        frame=frame,
        pa=record.pa,
        vsid=record.vsid,
        rewrite=rewrite,
        cacheable=cacheable,
    )


def _frag_needed(
    context: Context, port: PortInfo, subnet: types_pb2.VirtualSubnet, frame: bytes, packet: Ipv4Packet
) -> Action:
    """ICMP type 3 code 4 from the router (or the destination) back to the VM, with the inner MTU."""
    source_ip = ip_to_bytes(subnet.gateway_ip) if subnet.gateway_ip else packet.destination
    try:
        icmp = encode_icmp(fragmentation_needed(frame[ETHERNET_HEADER_LEN:], context.inner_mtu))
    except EncodeError:
        return drop(DropReason.TOO_BIG)
    reply_ip = encode_ipv4(
        Ipv4Packet(source=source_ip, destination=packet.source, protocol=PROTO_ICMP, payload=icmp)
    )
    reply = ethernet_header(port.mac, frame[0:6], ETHERTYPE_IPV4) + reply_ip
    return Action(ActionKind.REPLY, frame=reply, port=port.name, reply=ReplyKind.FRAG_NEEDED)


_TTL_PROTOCOL = struct.Struct("!H")


def apply_rewrite(frame: bytes | bytearray | memoryview, rewrite: bytes) -> bytes:
    """A routed frame: new MAC header, TTL - 1 and the header checksum updated incrementally."""
    routed = bytearray(frame)
    routed[0:12] = rewrite
    old_word = routed[22] << 8 | routed[23]
    routed[22] -= 1
    old_checksum = routed[24] << 8 | routed[25]
    _TTL_PROTOCOL.pack_into(routed, 24, checksum_update(old_checksum, old_word, old_word - 0x100))
    return bytes(routed)


# ----- from the wire -----


def decide_from_wire(context: Context, source_pa: bytes, vsid: int, frame: bytes) -> Action:
    """What to do with an inner ``frame`` that arrived as NVGRE with ``vsid`` from ``source_pa``."""
    if len(frame) < ETHERNET_HEADER_LEN:
        return drop(DropReason.TRUNCATED)
    ethertype = frame[12] << 8 | frame[13]
    if ethertype in VLAN_ETHERTYPES:
        return drop(DropReason.VLAN_TAGGED)
    table = context.table
    if table.subnet(vsid) is None:
        return drop(DropReason.UNKNOWN_VSID)
    destination_mac = frame[0:6]
    port = context.ports_by_mac.get((vsid, destination_mac))
    if port is None:
        if any(key[1] == destination_mac for key in context.ports_by_mac):
            return drop(DropReason.WRONG_VSID)
        return drop(DropReason.NO_PORT)
    pa = ip_to_str(source_pa)
    try:
        if ethertype == ETHERTYPE_ARP:
            arp = decode_arp(frame[ETHERNET_HEADER_LEN:])
            sender = table.record_by_mac(vsid, mac_to_str(arp.sender_mac))
            if sender is None or sender.pa != pa:
                return drop(DropReason.UNKNOWN_SOURCE_PA)
            return Action(ActionKind.DELIVER, frame=frame, port=port.name)
        if ethertype != ETHERTYPE_IPV4:
            return drop(DropReason.UNSUPPORTED_ETHERTYPE)
        packet = decode_ipv4(frame[ETHERNET_HEADER_LEN:])
        if not _source_lives_on(table, vsid, packet, pa):
            return drop(DropReason.UNKNOWN_SOURCE_PA)
    except DecodeError as error:
        return drop(error.reason)
    except RuntimeError as error:
        raise TableChangingError(f"the table changed under a decision: {error}") from error
    return Action(ActionKind.DELIVER, frame=frame, port=port.name, cacheable=True)


def _source_lives_on(table: RoutingTable, vsid: int, packet: Ipv4Packet, pa: str) -> bool:
    """Reverse path: would this host send traffic for the source CA to ``pa``? Anti-spoofing."""
    back = select_next_hop(
        table, vsid=vsid, source_ca=ip_to_str(packet.destination), destination_ca=ip_to_str(packet.source)
    )
    return back.found and back.pa == pa
