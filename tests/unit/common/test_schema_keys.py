"""The key schema: every key a builder makes parses back to its fields, and no bytes crash the parser."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.schema import TABLE_KINDS, TableKey, domain_of, keys, parse_key

rdids = st.uuids().map(str)
vsids = st.integers(0, 2**32 - 1)
ipv4s = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
prefixes = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda p: str(ipaddress.IPv4Network((p[0], p[1]), strict=False))
)
host_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda octets: ":".join(f"{o:02X}" for o in octets)
)

# (the key a builder makes, the TableKey it must parse to), for every builder of a whole key.
built_keys = st.one_of(
    ipv4s.map(lambda pa: (keys.pa_key(pa), TableKey(keys.KIND_PA, ident=pa))),
    rdids.map(lambda rdid: (keys.domain_key(rdid), TableKey(keys.KIND_DOMAIN, rdid))),
    st.builds(
        lambda rdid, vsid: (keys.subnet_key(rdid, vsid), TableKey(keys.KIND_SUBNET, rdid, vsid)), rdids, vsids
    ),
    st.builds(
        lambda rdid, vsid, ca: (keys.record_key(rdid, vsid, ca), TableKey(keys.KIND_RECORD, rdid, vsid, ca)),
        rdids,
        vsids,
        ipv4s,
    ),
    st.builds(
        lambda rdid, vsid, prefix, hop: (
            keys.route_key(rdid, vsid, prefix, hop),
            TableKey(keys.KIND_ROUTE, rdid, vsid, prefix, hop),
        ),
        rdids,
        vsids,
        prefixes,
        ipv4s,
    ),
    host_names.map(lambda name: (keys.host_key(name), TableKey(keys.KIND_HOST, ident=name))),
    host_names.map(lambda name: (keys.registration_key(name), TableKey(keys.KIND_REGISTRATION, ident=name))),
    vsids.map(lambda vsid: (keys.vsid_index_key(vsid), TableKey(keys.KIND_VSID_INDEX, vsid=vsid))),
    st.builds(
        lambda vsid, mac: (
            keys.mac_index_key(vsid, mac),
            TableKey(keys.KIND_MAC_INDEX, vsid=vsid, ident=mac.lower()),
        ),
        vsids,
        macs,
    ),
    ipv4s.map(lambda pa: (keys.pa_ref_key(pa), TableKey(keys.KIND_PA_REF, ident=pa))),
    st.just((keys.TABLE_REVISION_KEY, TableKey(keys.KIND_TABLE_REVISION))),
)


@settings(max_examples=500)
@given(built_keys)
def test_every_built_key_parses_back_to_its_fields(built: tuple[bytes, TableKey]) -> None:
    key, fields = built
    assert parse_key(key) == fields


@given(rdids, vsids, ipv4s, prefixes)
def test_the_named_fields_follow_the_kind(rdid: str, vsid: int, address: str, prefix: str) -> None:
    record = parse_key(keys.record_key(rdid, vsid, address))
    route = parse_key(keys.route_key(rdid, vsid, prefix, address))
    pa = parse_key(keys.pa_key(address))
    assert record is not None
    assert route is not None
    assert pa is not None
    assert (record.ca, record.pa_ip, record.destination_prefix) == (address, "", "")
    assert (route.ca, route.destination_prefix, route.next_hop) == ("", prefix, address)
    assert (pa.pa_ip, pa.ca, pa.host_name, pa.mac) == (address, "", "", "")
    assert record.in_table
    assert route.in_table
    assert pa.in_table
    index = parse_key(keys.vsid_index_key(vsid))
    assert index is not None
    assert not index.in_table


@given(built_keys)
def test_the_routing_domain_of_a_key_and_of_its_prefixes(built: tuple[bytes, TableKey]) -> None:
    key, fields = built
    if fields.kind not in (keys.KIND_DOMAIN, keys.KIND_SUBNET, keys.KIND_RECORD, keys.KIND_ROUTE):
        assert domain_of(key) is None
        return
    assert domain_of(key) == fields.rdid
    for prefix in (
        keys.domain_prefix(fields.rdid),
        keys.subnets_prefix(fields.rdid),
        keys.records_prefix(fields.rdid, fields.vsid),
        keys.routes_prefix(fields.rdid),
    ):
        assert domain_of(prefix) == fields.rdid
    assert domain_of(keys.TABLE_PREFIX) is None


def _model(key: bytes) -> TableKey | None:
    """The schema as docs/key-schema.md writes it, segment by segment: what ``parse_key`` must agree with."""
    if not key.startswith(keys.ROOT):
        return None
    parts = key[len(keys.ROOT) :].decode(errors="replace").split("/")
    try:
        match parts:
            case ["pa", pa_ip]:
                return TableKey("pa", ident=pa_ip)
            case ["table", rdid, "domain"]:
                return TableKey("domain", rdid)
            case ["table", rdid, "subnet", vsid]:
                return TableKey("subnet", rdid, int(vsid, 16))
            case ["table", rdid, "record", vsid, ca]:
                return TableKey("record", rdid, int(vsid, 16), ca)
            case ["table", rdid, "route", vsid, prefix, next_hop]:
                ip, _, length = prefix.partition("_")
                return TableKey("route", rdid, int(vsid, 16), f"{ip}/{length}", next_hop)
            case ["hosts", host_name]:
                return TableKey("host", ident=host_name)
            case ["registry", "hosts", host_name]:
                return TableKey("registration", ident=host_name)
            case ["index", "vsid", vsid]:
                return TableKey("vsid-index", vsid=int(vsid, 16))
            case ["index", "mac", vsid, mac]:
                return TableKey("mac-index", vsid=int(vsid, 16), ident=mac)
            case ["meta", "pa-refs", pa_ip]:
                return TableKey("pa-ref", ident=pa_ip)
            case ["meta", "table-revision"]:
                return TableKey("table-revision")
    except ValueError:
        return None
    return None


SEGMENT = st.text(alphabet="0123456789abcdef./_:-xz\u00e9", max_size=12)
WORDS = [
    "pa",
    "table",
    "hosts",
    "index",
    "meta",
    "record",
    "route",
    "subnet",
    "domain",
    "vsid",
    "mac",
    "pa-refs",
    "registry",
]


@settings(max_examples=1000)
@given(
    st.one_of(
        built_keys.map(lambda built: built[0]),
        st.lists(st.one_of(SEGMENT, st.sampled_from(WORDS)), max_size=7).map(
            lambda parts: keys.ROOT + "/".join(parts).encode()
        ),
        st.binary(max_size=60).map(lambda raw: keys.ROOT + raw),
        st.binary(max_size=60).map(lambda raw: keys.TABLE_PREFIX + raw),
        st.binary(max_size=60),
    )
)
def test_any_bytes_parse_as_the_schema_says_and_never_crash(key: bytes) -> None:
    parsed = parse_key(key)
    assert parsed == _model(key)
    if parsed is not None:
        assert parsed.in_table == (parsed.kind in TABLE_KINDS)
