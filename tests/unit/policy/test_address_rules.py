"""The routing table refuses what would break a network: a record's CA inside its subnet and not
reserved, a usable PA, route next hop and gateway, checked in the pure rules (property tests against
``ipaddress``) and through the store, on the single and the bulk path, and against races."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.memory_kv import MemoryKV
from services.policy import InvalidPolicy, PolicyConflict, PolicyStore
from services.policy.addresses import SubnetRule, unicast_problem
from services.policy.record_planner import Mode, RecordChange
from services.policy.validation import (
    validate_customer_route,
    validate_lookup_record,
    validate_provider_address,
    validate_virtual_subnet,
)
from tests.unit.policy.support import check_invariants
from tests.unit.policy.test_record_writes import RacingKV

RDID = "6f1c1d1e-0000-4000-8000-000000000001"
VSID = 5000
PA = "198.18.0.1"
TENANT_BLOCKS = [ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


def _model_ok(address: ipaddress.IPv4Address, networks: list[ipaddress.IPv4Network], gateway: str) -> bool:
    """What a VM may own, said with ipaddress: inside a prefix, not its network, broadcast or first
    host address (up to /30), not the gateway."""
    inside = [n for n in networks if address in n]
    if not inside or str(address) == gateway:
        return False
    network = inside[0]
    if network.prefixlen <= 30:
        return address not in (
            network.network_address,
            network.broadcast_address,
            network.network_address + 1,
        )
    return True


prefixes = st.tuples(st.sampled_from(TENANT_BLOCKS), st.integers(24, 32), st.integers(0, 255)).map(
    lambda t: ipaddress.IPv4Network((int(t[0].network_address) + t[2], t[1]), strict=False)
)


@settings(deadline=None)  # the machine is shared: wall time per example is noise
@given(st.lists(prefixes, min_size=1, max_size=3, unique_by=lambda n: n.network_address), st.integers(0, 767))
def test_a_subnet_admits_exactly_the_usable_host_addresses(
    networks: list[ipaddress.IPv4Network], offset: int
) -> None:
    networks = [n for i, n in enumerate(networks) if not any(n.overlaps(m) for m in networks[:i])]
    subnet = validate_virtual_subnet(
        types_pb2.VirtualSubnet(vsid=VSID, rdid=RDID, ca_prefixes=[str(n) for n in networks])
    )
    block = TENANT_BLOCKS[offset // 256]
    address = block.network_address + offset % 256
    problem = SubnetRule.of(subnet).ca_problem(str(address))
    assert (problem == "") == _model_ok(address, networks, subnet.gateway_ip)
    if problem:
        assert str(address) in problem


@settings(deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_unicast_is_what_ipaddress_calls_neither_multicast_loopback_reserved_nor_this_network(
    value: int,
) -> None:
    address = ipaddress.IPv4Address(value)
    expected = not (
        address.is_multicast
        or address.is_loopback
        or address.is_reserved
        or address in ipaddress.IPv4Network("0.0.0.0/8")
    )
    assert (unicast_problem(value) == "") == expected


@pytest.mark.parametrize(
    ("pa", "length", "ok"),
    [
        ("198.18.0.1", 16, True),
        ("198.18.0.0", 16, False),
        ("198.18.255.255", 16, False),
        ("198.18.0.0", 31, True),
        ("198.18.0.7", 32, True),
        ("224.0.0.1", 16, False),
        ("0.0.0.0", 16, False),
    ],
)
def test_a_pa_is_a_host_address_of_its_prefix(pa: str, length: int, ok: bool) -> None:
    address = types_pb2.ProviderAddress(host_name="h1", pa_ip=pa, prefix_length=length)
    if ok:
        assert validate_provider_address(address).pa_ip == pa
    else:
        with pytest.raises(InvalidPolicy) as caught:
            validate_provider_address(address)
        assert [v.field for v in caught.value.violations] == ["provider_address.pa_ip"]


@pytest.mark.parametrize("next_hop", ["224.0.0.5", "127.0.0.1", "255.255.255.255", "240.0.0.1"])
def test_a_route_next_hop_is_a_host_or_on_link(next_hop: str) -> None:
    route = types_pb2.CustomerRoute(
        rdid=RDID, vsid=VSID, destination_prefix="203.0.113.0/24", next_hop=next_hop
    )
    with pytest.raises(InvalidPolicy, match="next_hop"):
        validate_customer_route(route)
    route.next_hop = "0.0.0.0"
    assert validate_customer_route(route).next_hop == "0.0.0.0"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ca_prefixes": ["224.0.0.0/24"]}, "virtual_subnet.ca_prefixes[0]"),
        ({"ca_prefixes": ["0.0.0.0/0"]}, "virtual_subnet.ca_prefixes[0]"),
        ({"gateway_ip": "192.0.2.0"}, "virtual_subnet.gateway_ip"),
        ({"gateway_ip": "192.0.2.255"}, "virtual_subnet.gateway_ip"),
        ({"gateway_ip": "198.51.100.1"}, "virtual_subnet.gateway_ip"),
        ({"gateway_mac": "ff:ff:ff:ff:ff:ff"}, "virtual_subnet.gateway_mac"),
    ],
)
def test_bad_subnet_gateways_and_prefixes(changes: dict[str, object], field: str) -> None:
    subnet = types_pb2.VirtualSubnet(vsid=VSID, rdid=RDID, ca_prefixes=["192.0.2.0/24"])
    for name, value in changes.items():
        if isinstance(value, list):
            del getattr(subnet, name)[:]
            getattr(subnet, name).extend(value)
        else:
            setattr(subnet, name, value)
    with pytest.raises(InvalidPolicy) as caught:
        validate_virtual_subnet(subnet)
    assert field in [v.field for v in caught.value.violations]


def test_the_gateway_defaults_to_the_first_host_of_the_first_prefix() -> None:
    subnet = validate_virtual_subnet(
        types_pb2.VirtualSubnet(vsid=VSID, rdid=RDID, ca_prefixes=["198.51.100.0/25", "192.0.2.0/24"])
    )
    assert subnet.gateway_ip == "198.51.100.1"


@pytest.fixture
def store() -> PolicyStore:
    store = PolicyStore(MemoryKV(progress_interval=None))
    store.create_routing_domain(types_pb2.RoutingDomain(rdid=RDID, tenant_name="blue"))
    store.create_virtual_subnet(
        types_pb2.VirtualSubnet(
            vsid=VSID, rdid=RDID, ca_prefixes=["192.0.2.0/24", "198.51.100.0/25"], gateway_ip="192.0.2.254"
        )
    )
    store.create_provider_address(types_pb2.ProviderAddress(pa_ip=PA, host_name="h1", prefix_length=16))
    return store


def _record(ca: str, mac: str = "02:00:00:00:00:10") -> types_pb2.LookupRecord:
    return types_pb2.LookupRecord(vsid=VSID, ca=ca, mac=mac, pa=PA)


REFUSED_CAS = {
    "203.0.113.10": "outside VSID 5000's CA prefixes",
    "192.0.2.0": "the network address of 192.0.2.0/24",
    "192.0.2.255": "the broadcast address of 192.0.2.0/24",
    "192.0.2.1": "the first host address of 192.0.2.0/24",
    "198.51.100.1": "the first host address of 198.51.100.0/25",
    "198.51.100.127": "the broadcast address of 198.51.100.0/25",
    "192.0.2.254": "the gateway address of VSID 5000",
}


@pytest.mark.parametrize(("ca", "why"), REFUSED_CAS.items())
def test_a_record_ca_that_is_no_vms_address_in_its_subnet_is_refused(
    store: PolicyStore, ca: str, why: str
) -> None:
    with pytest.raises(PolicyConflict, match=why) as caught:
        store.create_lookup_record(_record(ca))
    assert [v.field for v in caught.value.violations] == ["lookup_record.ca"]
    assert check_invariants(store.kv) == 0


def test_a_record_may_not_take_the_gateway_mac(store: PolicyStore) -> None:
    gateway_mac = store.get_virtual_subnet(VSID).gateway_mac
    with pytest.raises(PolicyConflict, match="gateway MAC") as caught:
        store.create_lookup_record(_record("192.0.2.10", gateway_mac))
    assert [v.field for v in caught.value.violations] == ["lookup_record.mac"]


def test_the_bulk_path_applies_the_same_rule_and_counts_what_it_applied(store: PolicyStore) -> None:
    good = [_record(f"192.0.2.{i}", f"02:00:00:00:01:{i:02x}") for i in range(2, 12)]
    for bad_ca, why in REFUSED_CAS.items():
        run = store.bulk_apply()
        changes = [
            RecordChange(Mode.UPSERT, validate_lookup_record(r), field=f"upserts[{i}]")
            for i, r in enumerate([*good, _record(bad_ca, "02:00:00:00:02:00")])
        ]
        run.feed(changes)  # fewer than a transaction holds: nothing is planned until finish
        with pytest.raises(PolicyConflict, match=why) as caught:
            run.finish()
        assert "10 records applied" in caught.value.message
        assert [v.field for v in caught.value.violations] == ["upserts[10].ca"]
    assert check_invariants(store.kv) == 10


def test_a_subnet_update_that_would_strand_records_or_routes_is_refused(store: PolicyStore) -> None:
    store.create_lookup_record(_record("198.51.100.20"))
    subnet = store.get_virtual_subnet(VSID)
    del subnet.ca_prefixes[:]
    subnet.ca_prefixes.append("192.0.2.0/24")
    with pytest.raises(PolicyConflict, match=r"1 lookup records would not fit: 198\.51\.100\.20 is outside"):
        store.update_virtual_subnet(subnet)
    moved = store.get_virtual_subnet(VSID)
    moved.gateway_ip = "198.51.100.20"
    with pytest.raises(PolicyConflict, match="gateway address"):
        store.update_virtual_subnet(moved)
    # A description change admits the same addresses: no scan, no refusal.
    described = store.get_virtual_subnet(VSID)
    described.description = "web tier"
    assert store.update_virtual_subnet(described).description == "web tier"
    store.create_customer_route(
        types_pb2.CustomerRoute(
            rdid=RDID, vsid=VSID, destination_prefix="203.0.113.0/24", next_hop="198.51.100.64"
        )
    )
    store.delete_lookup_record(VSID, "198.51.100.20")
    split = store.get_virtual_subnet(VSID)
    del split.ca_prefixes[:]
    split.ca_prefixes.extend(["192.0.2.0/24", "198.51.100.64/26"])
    with pytest.raises(
        PolicyConflict, match=r"customer routes would not fit: 198\.51\.100\.64 is the network"
    ):
        store.update_virtual_subnet(split)


def test_a_route_next_hop_that_is_a_subnet_network_address_is_refused(store: PolicyStore) -> None:
    route = types_pb2.CustomerRoute(
        rdid=RDID, vsid=VSID, destination_prefix="203.0.113.0/24", next_hop="192.0.2.0"
    )
    with pytest.raises(PolicyConflict, match="network address") as caught:
        store.create_customer_route(route)
    assert [v.field for v in caught.value.violations] == ["customer_route.next_hop"]


def test_a_record_written_while_a_subnet_shrinks_makes_the_shrink_decide_again() -> None:
    kv = RacingKV()
    store, other = PolicyStore(kv), PolicyStore(kv)
    store.create_routing_domain(types_pb2.RoutingDomain(rdid=RDID, tenant_name="blue"))
    store.create_virtual_subnet(
        types_pb2.VirtualSubnet(vsid=VSID, rdid=RDID, ca_prefixes=["192.0.2.0/24", "198.51.100.0/24"])
    )
    store.create_provider_address(types_pb2.ProviderAddress(pa_ip=PA, host_name="h1", prefix_length=16))
    shrunk = store.get_virtual_subnet(VSID)
    del shrunk.ca_prefixes[1:]
    # The record lands after the shrink read the subnet's records and before it commits.
    kv.races.append(lambda: other.create_lookup_record(_record("198.51.100.20")))
    with pytest.raises(PolicyConflict, match=r"198\.51\.100\.20 is outside"):
        store.update_virtual_subnet(shrunk)
    assert list(store.get_virtual_subnet(VSID).ca_prefixes) == ["192.0.2.0/24", "198.51.100.0/24"]


def test_a_subnet_shrunk_while_a_record_is_written_makes_the_record_decide_again() -> None:
    kv = RacingKV()
    store, other = PolicyStore(kv), PolicyStore(kv)
    store.create_routing_domain(types_pb2.RoutingDomain(rdid=RDID, tenant_name="blue"))
    store.create_virtual_subnet(
        types_pb2.VirtualSubnet(vsid=VSID, rdid=RDID, ca_prefixes=["192.0.2.0/24", "198.51.100.0/24"])
    )
    store.create_provider_address(types_pb2.ProviderAddress(pa_ip=PA, host_name="h1", prefix_length=16))
    shrunk = store.get_virtual_subnet(VSID)
    del shrunk.ca_prefixes[1:]
    kv.races.append(lambda: other.update_virtual_subnet(shrunk))
    with pytest.raises(PolicyConflict, match=r"198\.51\.100\.20 is outside"):
        store.create_lookup_record(_record("198.51.100.20"))
    assert check_invariants(kv) == 0
