"""Next-hop selection: each HNV decision step, and isolation between routing domains as a property."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.routing import RoutingError, select_next_hop
from services.common.schema import StoreEntry, key_of
from services.common.table import RoutingTable, TableChange
from tests.unit.vswitch.table_factory import (
    SUBNET_DOMAIN,
    SUBNET_PREFIXES,
    as_map,
    domain,
    entries,
    provider,
    record,
    route,
    subnet,
)

BLUE, RED = "rd-blue", "rd-red"


def _table(*entries: types_pb2.StoreEntry) -> RoutingTable:
    table = RoutingTable()
    table.reset(as_map(*entries), 1)
    return table


@pytest.fixture
def tenants() -> RoutingTable:
    """Blue has two subnets; red reuses blue's first subnet's CA space."""
    return _table(
        provider("198.18.0.1"),
        provider("198.18.0.2"),
        provider("198.18.0.3"),
        domain(BLUE),
        domain(RED),
        subnet(4096, BLUE, "192.0.2.0/25"),
        subnet(4097, BLUE, "192.0.2.128/25"),
        subnet(4098, RED, "192.0.2.0/25"),
        record(4096, BLUE, "192.0.2.1", "198.18.0.1"),
        record(4096, BLUE, "192.0.2.2", "198.18.0.2"),
        record(4097, BLUE, "192.0.2.130", "198.18.0.3"),
        record(4098, RED, "192.0.2.1", "198.18.0.3"),
        record(4098, RED, "192.0.2.2", "198.18.0.1"),
    )


def test_same_subnet_is_delivered_to_the_record_pa(tenants: RoutingTable) -> None:
    hop = select_next_hop(tenants, vsid=4096, source_ca="192.0.2.1", destination_ca="192.0.2.2")
    assert hop.found
    assert (hop.pa, hop.vsid, hop.source_vsid, hop.rdid) == ("198.18.0.2", 4096, 4096, BLUE)
    assert hop.rule == types_pb2.LOOKUP_RULE_ENCAP
    assert hop.route is None
    assert hop.record is not None
    assert hop.mac == hop.record.mac


def test_same_ca_in_another_tenant_goes_to_that_tenants_pa(tenants: RoutingTable) -> None:
    hop = select_next_hop(tenants, vsid=4098, source_ca="192.0.2.1", destination_ca="192.0.2.2")
    assert (hop.pa, hop.vsid, hop.rdid) == ("198.18.0.1", 4098, RED)


def test_rdid_scope_finds_the_source_subnet_by_prefix(tenants: RoutingTable) -> None:
    hop = select_next_hop(tenants, rdid=BLUE, source_ca="192.0.2.130", destination_ca="192.0.2.1")
    assert hop.found
    assert (hop.source_vsid, hop.vsid, hop.pa) == (4097, 4096, "198.18.0.1")
    assert any("distributed router" in reason for reason in hop.reasons)


def test_distributed_router_never_reaches_another_domain(tenants: RoutingTable) -> None:
    hop = select_next_hop(tenants, vsid=4098, source_ca="192.0.2.1", destination_ca="192.0.2.130")
    assert not hop.found
    assert hop.pa == ""
    assert hop.reasons


def test_customer_routes_longest_prefix_then_lowest_metric() -> None:
    table = _table(
        subnet(4096, BLUE, "192.0.2.0/25"),
        record(4096, BLUE, "192.0.2.10", "198.18.0.1"),
        record(4096, BLUE, "192.0.2.11", "198.18.0.2"),
        record(4096, BLUE, "192.0.2.12", "198.18.0.3"),
        route(BLUE, 4096, "0.0.0.0/0", "192.0.2.10", 0),
        route(BLUE, 4096, "203.0.113.0/24", "192.0.2.11", 7),
        route(BLUE, 4096, "203.0.113.0/24", "192.0.2.12", 3),
    )
    specific = select_next_hop(table, vsid=4096, source_ca="192.0.2.10", destination_ca="203.0.113.9")
    assert specific.pa == "198.18.0.3"
    assert specific.route is not None
    assert specific.route.metric == 3
    default = select_next_hop(table, vsid=4096, source_ca="192.0.2.10", destination_ca="198.51.100.1")
    assert default.pa == "198.18.0.1"
    assert default.route is not None
    assert default.route.destination_prefix == "0.0.0.0/0"


def test_a_route_whose_next_hop_does_not_resolve_is_skipped() -> None:
    table = _table(
        subnet(4096, BLUE, "192.0.2.0/25"),
        record(4096, BLUE, "192.0.2.10", "198.18.0.1"),
        route(BLUE, 4096, "203.0.113.0/24", "192.0.2.99", 0),
        route(BLUE, 4096, "0.0.0.0/0", "192.0.2.10", 0),
    )
    hop = select_next_hop(table, vsid=4096, source_ca="192.0.2.10", destination_ca="203.0.113.9")
    assert hop.found
    assert hop.route is not None
    assert hop.route.destination_prefix == "0.0.0.0/0"
    assert any("inactive" in reason for reason in hop.reasons)


def test_on_link_route_resolves_the_destination_itself() -> None:
    table = _table(
        subnet(4096, BLUE, "192.0.2.0/25"),
        subnet(4097, BLUE, "198.51.100.0/24"),
        record(4097, BLUE, "203.0.113.5", "198.18.0.2"),
        route(BLUE, 4097, "203.0.113.0/24", "0.0.0.0", 0),
    )
    hop = select_next_hop(table, vsid=4096, source_ca="192.0.2.10", destination_ca="203.0.113.5")
    assert (hop.found, hop.pa, hop.vsid) == (True, "198.18.0.2", 4097)


def test_gateway_wildcard_is_the_fallback() -> None:
    wildcard = record(4096, BLUE, "0.0.0.0", "198.18.0.3", kind=types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD)
    table = _table(subnet(4096, BLUE, "192.0.2.0/25"), wildcard)
    hop = select_next_hop(table, vsid=4096, source_ca="192.0.2.10", destination_ca="198.51.100.77")
    assert (hop.found, hop.pa) == (True, "198.18.0.3")
    assert hop.record is not None
    assert hop.record.type == types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD


def test_l2_only_records_are_switched_but_not_routed() -> None:
    l2 = record(4097, BLUE, "192.0.2.140", "198.18.0.2", kind=types_pb2.LOOKUP_TYPE_L2_ONLY)
    table = _table(subnet(4096, BLUE, "192.0.2.0/25"), subnet(4097, BLUE, "192.0.2.128/25"), l2)
    same = select_next_hop(table, vsid=4097, source_ca="192.0.2.141", destination_ca="192.0.2.140")
    assert same.found
    routed = select_next_hop(table, vsid=4096, source_ca="192.0.2.1", destination_ca="192.0.2.140")
    assert not routed.found
    assert any("L2_ONLY" in reason for reason in routed.reasons)


def test_rule_none_is_reported() -> None:
    plain = record(4096, BLUE, "192.0.2.5", "198.18.0.2", rule=types_pb2.LOOKUP_RULE_NONE)
    table = _table(subnet(4096, BLUE, "192.0.2.0/25"), plain)
    hop = select_next_hop(table, vsid=4096, source_ca="192.0.2.1", destination_ca="192.0.2.5")
    assert hop.found
    assert hop.rule == types_pb2.LOOKUP_RULE_NONE


def test_unknown_scope_is_not_found(tenants: RoutingTable) -> None:
    assert not select_next_hop(tenants, vsid=5000, source_ca="192.0.2.1", destination_ca="192.0.2.2").found
    unknown_domain = select_next_hop(tenants, rdid="rd-x", source_ca="192.0.2.1", destination_ca="192.0.2.2")
    assert not unknown_domain.found


@pytest.mark.parametrize(
    ("scope", "source", "destination", "fields"),
    [
        ({}, "192.0.2.1", "192.0.2.2", {"scope"}),
        ({"vsid": 4096, "rdid": BLUE}, "192.0.2.1", "192.0.2.2", {"scope"}),
        ({"vsid": 4096}, "192.0.2.300", "nope", {"source_ca", "destination_ca"}),
    ],
)
def test_bad_questions_raise_with_field_violations(
    tenants: RoutingTable, scope: dict[str, Any], source: str, destination: str, fields: set[str]
) -> None:
    with pytest.raises(RoutingError) as raised:
        select_next_hop(tenants, source_ca=source, destination_ca=destination, **scope)
    assert {v.field for v in raised.value.violations} == fields


CAS = st.sampled_from(["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.130", "192.0.2.131", "203.0.113.9"])


@settings(max_examples=300, deadline=None)
@given(st.lists(entries(), max_size=40), st.sampled_from(sorted(SUBNET_DOMAIN)), CAS, CAS)
def test_never_crosses_routing_domains(
    writes: list[StoreEntry], vsid: int, source: str, destination: str
) -> None:
    table = RoutingTable()
    base = [subnet(v, SUBNET_DOMAIN[v], SUBNET_PREFIXES[v]) for v in SUBNET_DOMAIN]
    table.update([TableChange(key_of(e), e, i + 1) for i, e in enumerate([*base, *writes])])
    hop = select_next_hop(table, vsid=vsid, source_ca=source, destination_ca=destination)
    event("found" if hop.found else "not found")
    if not hop.found:
        assert hop.pa == ""
        return
    rdid = SUBNET_DOMAIN[vsid]
    assert hop.rdid == rdid
    assert hop.record is not None
    assert hop.record.rdid == rdid
    assert SUBNET_DOMAIN[hop.vsid] == rdid
    assert table.rdid_of(hop.vsid) == rdid
    assert hop.pa == hop.record.pa
    if hop.route is not None:
        assert hop.route.rdid == rdid
