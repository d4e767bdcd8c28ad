"""StoreEntry encoding: the framed fast path for lookup records writes protobuf's own bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.policy.entries import build_entry, decode_entry, encode_entry

text = st.text(max_size=80)
records = st.builds(
    types_pb2.LookupRecord,
    ca=text,
    vsid=st.integers(0, 2**32 - 1),
    mac=text,
    pa=text,
    vm_name=st.text(max_size=300),
    rule=st.sampled_from(types_pb2.LookupRule.values()),
    type=st.sampled_from(types_pb2.LookupType.values()),
    rdid=text,
    # A stored record has none (the fast path); a resource read back carries one.
    revision=st.one_of(st.just(0), st.integers(1, 2**63 - 1)),
)


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
