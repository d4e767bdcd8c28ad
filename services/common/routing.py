"""Next-hop selection over a ``RoutingTable``: HNV's ``Select-NetVirtualizationNextHop``, pure.

Both the policy service's ``SelectNextHop`` diagnostic and the vswitch datapath call
``select_next_hop``, so the answer a user sees is the decision the switch makes.

The decision, in order (every step stays inside the source's routing domain):

1. The source subnet: the subnet of ``vsid``, or with ``rdid`` the subnet of that domain whose CA
   prefixes hold the source CA (falling back to a subnet that has a record for the source CA).
2. Same subnet: the destination's lookup record in the source VSID (any type: an L2_ONLY record is
   reachable on its own virtual subnet, switched by MAC).
3. Distributed router: another subnet of the same routing domain whose prefixes hold the destination,
   and a STATIC record for it there. L2_ONLY records are not routed to (the router needs an
   authoritative CA), so they are skipped with a reason.
4. Customer routes of the domain, longest prefix first, then lowest metric: the next hop is resolved
   to a record (``0.0.0.0`` means on-link: the destination itself is resolved in the route's subnet).
   A route whose next hop does not resolve is inactive; the next candidate is tried.
5. The GATEWAY_WILDCARD record of the destination's subnet (when the destination lies in a subnet of
   the domain) or else of the source subnet.

A record with rule NONE is returned as found with ``rule`` NONE: the caller delivers it without
encapsulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overland.v1 import types_pb2
from services.common.errors import FieldViolation, InvalidArgument
from services.common.table import RoutingTable, ipv4_int

# A next hop, not a bind address.
ON_LINK = "0.0.0.0"  # noqa: S104


class RoutingError(InvalidArgument):
    """A next-hop question that cannot be asked: a bad address or a missing scope."""


@dataclass
class NextHop:
    """The answer: where a packet goes, and each step of the decision in ``reasons``."""

    found: bool = False
    pa: str = ""
    vsid: int = 0
    mac: str = ""
    rule: int = types_pb2.LOOKUP_RULE_UNSPECIFIED
    record: types_pb2.LookupRecord | None = None
    route: types_pb2.CustomerRoute | None = None
    reasons: list[str] = field(default_factory=list)
    source_vsid: int = 0
    rdid: str = ""


def select_next_hop(
    table: RoutingTable,
    *,
    vsid: int | None = None,
    rdid: str | None = None,
    source_ca: str,
    destination_ca: str,
) -> NextHop:
    """Where a packet from ``source_ca`` to ``destination_ca`` goes; see the module docstring."""
    _check_question(vsid, rdid, source_ca, destination_ca)
    answer = NextHop()
    source = _source_subnet(table, vsid, rdid, source_ca, answer)
    if source is None:
        return answer
    answer.source_vsid = source.vsid
    answer.rdid = source.rdid

    direct = table.record(source.vsid, destination_ca)
    if direct is not None:
        answer.reasons.append(f"{destination_ca} has a lookup record in the source subnet {source.vsid}")
        return _deliver(answer, direct)

    destination_subnet = table.subnet_containing(source.rdid, destination_ca)
    if destination_subnet is not None and destination_subnet.vsid != source.vsid:
        routed = table.record(destination_subnet.vsid, destination_ca)
        if routed is not None and routed.type != types_pb2.LOOKUP_TYPE_L2_ONLY:
            answer.reasons.append(
                f"{destination_ca} is in subnet {destination_subnet.vsid} of the same routing domain: "
                "routed by the distributed router"
            )
            return _deliver(answer, routed)
        if routed is not None:
            answer.reasons.append(
                f"{destination_ca} has an L2_ONLY record in subnet {destination_subnet.vsid}: not routed to"
            )
        else:
            answer.reasons.append(
                f"{destination_ca} is in subnet {destination_subnet.vsid} but has no record"
            )

    for route in table.routes_matching(source.rdid, destination_ca):
        resolved = _resolve_route(table, source.rdid, route, destination_ca)
        label = f"route {route.destination_prefix} via {route.next_hop} metric {route.metric}"
        if resolved is None:
            answer.reasons.append(f"{label}: next hop does not resolve to a record, inactive")
            continue
        answer.reasons.append(f"{label}: longest matching active route")
        answer.route = route
        return _deliver(answer, resolved)

    fallback_vsid = destination_subnet.vsid if destination_subnet is not None else source.vsid
    wildcard = table.wildcard(fallback_vsid)
    if wildcard is not None:
        answer.reasons.append(f"no record or route: the gateway wildcard record of subnet {fallback_vsid}")
        return _deliver(answer, wildcard)
    answer.reasons.append(
        f"no record, route or gateway wildcard for {destination_ca} in routing domain {source.rdid}"
    )
    return answer


def _check_question(vsid: int | None, rdid: str | None, source_ca: str, destination_ca: str) -> None:
    violations = []
    if (vsid is None) == (not rdid):
        violations.append(FieldViolation("scope", "give exactly one of vsid and rdid"))
    if ipv4_int(source_ca) is None:
        violations.append(FieldViolation("source_ca", f"not an IPv4 address: {source_ca!r}"))
    if ipv4_int(destination_ca) is None:
        violations.append(FieldViolation("destination_ca", f"not an IPv4 address: {destination_ca!r}"))
    if violations:
        raise RoutingError("invalid next-hop question", violations)


def _source_subnet(
    table: RoutingTable, vsid: int | None, rdid: str | None, source_ca: str, answer: NextHop
) -> types_pb2.VirtualSubnet | None:
    if vsid is not None:
        subnet = table.subnet(vsid)
        if subnet is None:
            answer.reasons.append(f"virtual subnet {vsid} is unknown")
            return None
        answer.reasons.append(f"source subnet {vsid} in routing domain {subnet.rdid}")
        return subnet
    assert rdid is not None  # _check_question guarantees exactly one scope
    if table.domain(rdid) is None and not table.subnets_of(rdid):
        answer.reasons.append(f"routing domain {rdid} is unknown")
        return None
    subnet = table.subnet_containing(rdid, source_ca)
    if subnet is None:
        subnet = next((s for s in table.subnets_of(rdid) if table.record(s.vsid, source_ca)), None)
    if subnet is None:
        answer.reasons.append(f"no subnet of routing domain {rdid} holds the source {source_ca}")
        return None
    answer.reasons.append(f"source {source_ca} is in subnet {subnet.vsid} of routing domain {rdid}")
    return subnet


def _resolve_route(
    table: RoutingTable, rdid: str, route: types_pb2.CustomerRoute, destination_ca: str
) -> types_pb2.LookupRecord | None:
    """The record a route's next hop names, only ever inside ``rdid``."""
    target = destination_ca if route.next_hop == ON_LINK else route.next_hop
    if table.rdid_of(route.vsid) == rdid:
        record = table.record(route.vsid, target)
        if record is not None:
            return record
    subnet = table.subnet_containing(rdid, target)
    if subnet is None:
        return None
    return table.record(subnet.vsid, target)


def _deliver(answer: NextHop, record: types_pb2.LookupRecord) -> NextHop:
    if record.rdid != answer.rdid:
        # Only a store that broke its invariants can get here; isolation wins over delivery.
        answer.reasons.append(f"record {record.ca} belongs to routing domain {record.rdid}: refused")
        return answer
    answer.found = True
    answer.record = record
    answer.pa = record.pa
    answer.vsid = record.vsid
    answer.mac = record.mac
    answer.rule = record.rule or types_pb2.LOOKUP_RULE_ENCAP
    if answer.rule == types_pb2.LOOKUP_RULE_NONE:
        answer.reasons.append("rule NONE: delivered without encapsulation")
    else:
        answer.reasons.append(f"encapsulate to PA {record.pa} with VSID {record.vsid}")
    return answer
