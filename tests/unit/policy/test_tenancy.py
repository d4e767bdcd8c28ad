"""The tenant filter over a store (services/policy/tenancy.py): paged listings across domains hold
exactly a tenant's own, whatever the page size and even with a page token made up to point into
another tenant's domain; a watch learns a domain's owner from the domain's own changes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.kv import KeyValue
from services.common.memory_kv import MemoryKV
from services.common.schema import keys
from services.policy import PolicyStore
from services.policy.paging import encode_page_token
from services.policy.tenancy import TenantFilter

TENANTS = ("Contoso", "Fabrikam", "Northwind")


def rdid_of(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def _table(owners: list[str]) -> tuple[MemoryKV, PolicyStore, dict[int, str]]:
    kv = MemoryKV()
    store = PolicyStore(kv)
    owner_of_vsid = {}
    for number, owner in enumerate(owners):
        rdid = store.create_routing_domain(
            types_pb2.RoutingDomain(rdid=rdid_of(number), tenant_name=owner)
        ).rdid
        vsid = 5000 + number
        store.create_virtual_subnet(
            types_pb2.VirtualSubnet(vsid=vsid, rdid=rdid, ca_prefixes=["192.0.2.0/24"])
        )
        owner_of_vsid[vsid] = owner
    return kv, store, owner_of_vsid


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TENANTS), max_size=12), st.sampled_from(TENANTS), st.integers(1, 5))
def test_paged_lists_hold_exactly_a_tenant_s_own(owners: list[str], tenant: str, size: int) -> None:
    kv, store, owner_of_vsid = _table(owners)
    try:
        listed: list[int] = []
        token = ""
        while True:
            page = store.list_virtual_subnets(
                types_pb2.PageRequest(page_size=size, page_token=token), tenant=TenantFilter(kv, tenant)
            )
            listed += [subnet.vsid for subnet in page.items]
            token = page.next_page_token
            if not token:
                break
        assert listed == sorted(vsid for vsid, owner in owner_of_vsid.items() if owner == tenant)
        domains = store.list_routing_domains(types_pb2.PageRequest(), tenant=TenantFilter(kv, tenant)).items
        assert all(domain.tenant_name == tenant for domain in domains)
        assert len(domains) == owners.count(tenant)
        # A token made up to resume inside every domain shows nothing of another tenant's.
        for number in range(len(owners)):
            forged = encode_page_token(kv.current_revision(), keys.subnets_prefix(rdid_of(number)))
            page = store.list_virtual_subnets(
                types_pb2.PageRequest(page_token=forged), tenant=TenantFilter(kv, tenant)
            )
            assert all(owner_of_vsid[subnet.vsid] == tenant for subnet in page.items)
    finally:
        kv.close()


def test_a_watch_follows_a_domain_handed_over() -> None:
    kv, store, _ = _table(["Fabrikam"])
    try:
        watched = TenantFilter(kv, "Contoso")
        subnet_key = keys.subnet_key(rdid_of(0), 5000)
        assert not watched.sees_event(subnet_key, None)
        # The admin gives the domain to Contoso: from that change on, it sees the domain.
        handed = store.update_routing_domain(types_pb2.RoutingDomain(rdid=rdid_of(0), tenant_name="Contoso"))
        domain_kv = kv.get(keys.domain_key(rdid_of(0)))
        assert domain_kv is not None
        assert watched.sees_event(domain_kv.key, domain_kv)
        assert watched.sees_event(subnet_key, None)
        # Taken away again: it sees that change (its domain went), then nothing more.
        store.update_routing_domain(types_pb2.RoutingDomain(rdid=rdid_of(0), tenant_name="Fabrikam"))
        taken = kv.get(keys.domain_key(rdid_of(0)))
        assert taken is not None
        assert watched.sees_event(taken.key, taken)
        assert not watched.sees_event(subnet_key, None)
        assert handed.tenant_name == "Contoso"
        # A PUT of an unreadable domain value is no one's.
        assert not watched.sees_event(domain_kv.key, KeyValue(domain_kv.key, b"\xff", 1, 1, 1))
    finally:
        kv.close()
