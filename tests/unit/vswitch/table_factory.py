"""Builders of routing-table entries and hypothesis strategies over them, shared by the table tests."""

from __future__ import annotations

from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.schema import StoreEntry, key_of, wrap

RDIDS = ("rd-blue", "rd-red")
# Both domains reuse the same CA space on purpose: isolation must not depend on distinct addresses.
SUBNET_PREFIXES = {
    4096: "192.0.2.0/25",
    4097: "192.0.2.128/25",
    4098: "192.0.2.0/25",
    4099: "198.51.100.0/24",
}
SUBNET_DOMAIN = {4096: "rd-blue", 4097: "rd-blue", 4098: "rd-red", 4099: "rd-red"}
PAS = ("198.18.0.1", "198.18.0.2", "198.18.0.3")


def provider(pa_ip: str, host: str = "") -> StoreEntry:
    return wrap(types_pb2.ProviderAddress(host_name=host or f"host-{pa_ip}", pa_ip=pa_ip, prefix_length=24))


def domain(rdid: str, tenant: str = "") -> StoreEntry:
    return wrap(types_pb2.RoutingDomain(rdid=rdid, tenant_name=tenant or rdid))


def subnet(vsid: int, rdid: str, *prefixes: str) -> StoreEntry:
    return wrap(types_pb2.VirtualSubnet(vsid=vsid, rdid=rdid, ca_prefixes=list(prefixes)))


def record(
    vsid: int,
    rdid: str,
    ca: str,
    pa: str,
    mac: str = "",
    *,
    rule: types_pb2.LookupRule = types_pb2.LOOKUP_RULE_ENCAP,
    kind: types_pb2.LookupType = types_pb2.LOOKUP_TYPE_STATIC,
) -> StoreEntry:
    mac = mac or "02:00:" + ":".join(f"{b:02x}" for b in bytes(int(p) for p in ca.split(".")))
    return wrap(
        types_pb2.LookupRecord(
            vsid=vsid, rdid=rdid, ca=ca, mac=mac, pa=pa, rule=rule, type=kind, vm_name="vm"
        )
    )


def route(rdid: str, vsid: int, prefix: str, next_hop: str, metric: int = 0) -> StoreEntry:
    return wrap(
        types_pb2.CustomerRoute(
            rdid=rdid, vsid=vsid, destination_prefix=prefix, next_hop=next_hop, metric=metric
        )
    )


def as_map(*entries: StoreEntry) -> dict[bytes, StoreEntry]:
    return {key_of(entry): entry for entry in entries}


@st.composite
def entries(draw: st.DrawFn) -> StoreEntry:
    """Any table entry over a small universe of keys, so that puts, overwrites and deletes collide."""
    kind = draw(st.sampled_from(("pa", "domain", "subnet", "record", "route")))
    if kind == "pa":
        return provider(draw(st.sampled_from(PAS)))
    if kind == "domain":
        return domain(draw(st.sampled_from(RDIDS)), draw(st.sampled_from(("tenant-a", "tenant-b"))))
    vsid = draw(st.sampled_from(sorted(SUBNET_PREFIXES)))
    rdid = SUBNET_DOMAIN[vsid]
    if kind == "subnet":
        return subnet(vsid, rdid, SUBNET_PREFIXES[vsid])
    if kind == "record":
        last = draw(st.sampled_from((1, 2, 3, 130, 131)))
        ca = f"192.0.2.{last}"
        return record(
            vsid,
            rdid,
            ca,
            draw(st.sampled_from(PAS)),
            draw(st.sampled_from(("", "02:00:00:00:00:01"))),
            kind=draw(
                st.sampled_from(
                    (
                        types_pb2.LOOKUP_TYPE_STATIC,
                        types_pb2.LOOKUP_TYPE_L2_ONLY,
                        types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD,
                    )
                )
            ),
        )
    return route(
        rdid,
        vsid,
        draw(st.sampled_from(("0.0.0.0/0", "203.0.113.0/24", "203.0.113.128/25"))),
        draw(st.sampled_from(("0.0.0.0", "192.0.2.1", "192.0.2.130"))),
        draw(st.integers(0, 3)),
    )


# A write (entry) or a delete (the key of an entry) against the small universe.
operations = st.lists(st.tuples(st.booleans(), entries()), max_size=40)
