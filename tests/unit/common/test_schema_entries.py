"""The StoreEntry codec: the framed fast path for lookup records writes protobuf's own bytes, every
resource round-trips through its key and value, and no value crashes the decoder."""

from __future__ import annotations

import copy
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.kv import KeyValue
from services.common.schema import (
    CorruptEntry,
    Resource,
    StoreEntry,
    build_entry,
    decode_entry,
    decode_snapshot,
    encode_entry,
    key_of,
    keys,
    parse_key,
    read_entry,
    resource_from,
    wrap,
)

# Protobuf string fields hold UTF-8: protobuf 7 refuses lone surrogates when a message is built.
unicode = st.characters(blacklist_categories=["Cs"])
text = st.text(unicode, max_size=80)
# Identity fields end up in keys: no "/" (which separates segments) in them.
names = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/"), max_size=40)
revisions = st.one_of(st.just(0), st.integers(1, 2**63 - 1))
vsids = st.integers(0, 2**32 - 1)
ipv4s = st.ip_addresses(v=4).map(str)
records = st.builds(
    types_pb2.LookupRecord,
    ca=text,
    vsid=vsids,
    mac=text,
    pa=text,
    vm_name=st.text(unicode, max_size=300),
    rule=st.sampled_from(types_pb2.LookupRule.values()),
    type=st.sampled_from(types_pb2.LookupType.values()),
    rdid=text,
    # A stored record has none (the fast path); a resource read back carries one.
    revision=revisions,
)
resources: st.SearchStrategy[Resource] = st.one_of(
    st.builds(types_pb2.RoutingDomain, rdid=names, tenant_name=text, description=text, revision=revisions),
    st.builds(
        types_pb2.VirtualSubnet,
        vsid=vsids,
        rdid=names,
        ca_prefixes=st.lists(text, max_size=3),
        revision=revisions,
    ),
    st.builds(
        types_pb2.ProviderAddress,
        pa_ip=names,
        host_name=text,
        prefix_length=st.integers(0, 32),
        revision=revisions,
    ),
    st.builds(
        types_pb2.LookupRecord, ca=names, vsid=vsids, mac=text, pa=text, rdid=names, revision=revisions
    ),
    st.builds(
        types_pb2.CustomerRoute,
        rdid=names,
        vsid=vsids,
        destination_prefix=st.tuples(ipv4s, st.integers(0, 32)).map(
            lambda p: str(ipaddress.IPv4Network(p, strict=False))
        ),
        next_hop=ipv4s,
        metric=st.integers(0, 2**32 - 1),
        revision=revisions,
    ),
    st.builds(types_pb2.HostStatus, host_name=names, pa_ip=text, applied_revision=st.integers(0, 2**63 - 1)),
    st.builds(
        types_pb2.Host,
        host_name=names,
        pa_ip=text,
        registration_time_unix_nanos=st.integers(0, 2**63 - 1),
        revision=revisions,
    ),
)
traces = st.one_of(st.none(), st.builds(types_pb2.TraceContext, traceparent=text, tracestate=text))


@given(records, st.integers(-(2**63), 2**63 - 1))
def test_a_record_entry_is_protobufs_bytes(record: types_pb2.LookupRecord, write_time: int) -> None:
    encoded = encode_entry(record, write_time)
    assert encoded == build_entry(record, write_time).SerializeToString()
    entry = decode_entry(encoded)
    assert entry.write_time_unix_nanos == write_time
    stored = types_pb2.LookupRecord()
    stored.CopyFrom(record)
    # The entry's revision is cleared: etcd's mod revision is the truth.
    stored.revision = 0
    assert entry.lookup_record == stored


def test_an_entry_with_a_trace_carries_it() -> None:
    trace = types_pb2.TraceContext(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    record = types_pb2.LookupRecord(ca="192.0.2.1", vsid=5000, mac="02:00:00:00:00:01", pa="198.18.0.1")
    entry = decode_entry(encode_entry(record, 7, trace))
    assert (entry.trace, entry.lookup_record, entry.write_time_unix_nanos) == (trace, record, 7)


@given(resources, st.integers(0, 2**63 - 1), traces, st.integers(1, 2**63 - 1))
def test_every_resource_round_trips_through_its_key_and_value(
    resource: Resource, write_time: int, trace: types_pb2.TraceContext | None, mod_revision: int
) -> None:
    key = key_of(wrap(resource))
    kv = KeyValue(key, encode_entry(resource, write_time, trace), 1, mod_revision, 1)
    back = resource_from(kv, type(resource))
    expected = copy.deepcopy(resource)
    if not isinstance(expected, types_pb2.HostStatus):
        # The stored revision is cleared; the one read back is the key's mod revision.
        expected.revision = mod_revision
    assert back == expected
    entry = read_entry(kv)
    assert (entry.write_time_unix_nanos, entry.HasField("trace")) == (write_time, trace is not None)
    assert key_of(entry) == key
    # The key names the resource's kind, and the value holds it.
    parsed = parse_key(key)
    assert parsed is not None
    assert (
        entry.WhichOneof("resource")
        == {
            "pa": "provider_address",
            "domain": "routing_domain",
            "subnet": "virtual_subnet",
            "record": "lookup_record",
            "route": "customer_route",
            "host": "host_status",
            "registration": "host",
        }[parsed.kind]
    )


@given(resources, st.integers(1, 2**63 - 1))
def test_wrap_keeps_the_resource_as_it_is(resource: Resource, write_time: int) -> None:
    entry = wrap(resource, write_time)
    held = getattr(entry, entry.WhichOneof("resource") or "")
    assert (held, entry.write_time_unix_nanos) == (resource, write_time)


@given(st.binary(max_size=200), st.sampled_from([types_pb2.LookupRecord, types_pb2.RoutingDomain]))
def test_no_value_crashes_the_decoder(value: bytes, kind: type[types_pb2.LookupRecord]) -> None:
    kv = KeyValue(keys.record_key("rd", 4096, "192.0.2.1"), value, 1, 5, 1)
    try:
        entry = read_entry(kv)
    except CorruptEntry:
        assert decode_snapshot([kv]) == {}
    else:
        assert decode_snapshot([kv]) == {kv.key: entry}
    try:
        resource = resource_from(kv, kind)
    except CorruptEntry:
        return
    assert isinstance(resource, kind)


def test_a_value_holding_another_resource_is_corrupt() -> None:
    domain = encode_entry(types_pb2.RoutingDomain(rdid="rd"), 1)
    kv = KeyValue(keys.record_key("rd", 4096, "192.0.2.1"), domain, 1, 5, 1)
    with pytest.raises(CorruptEntry, match="holds routing_domain, expected lookup_record"):
        resource_from(kv, types_pb2.LookupRecord)
    with pytest.raises(CorruptEntry, match="no key"):
        key_of(StoreEntry())
