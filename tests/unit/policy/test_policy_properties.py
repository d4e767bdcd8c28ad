"""Property tests of the pure parts: validation, page tokens, the record planner (against a model)."""

from __future__ import annotations

import ipaddress
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overland.defaults import MAX_VSID, MIN_VSID
from overland.v1 import types_pb2
from services.common.kv import Compare, Delete, KeyValue, Put
from services.common.memory_kv import MemoryKV
from services.common.schema import encode_entry, keys
from services.policy import InvalidPolicy, PolicyConflict, PolicyError, PolicyStore, ResourceExists
from services.policy.paging import encode_page_token, parse_page
from services.policy.record_planner import Mode, RecordChange, TableState, plan_transaction
from services.policy.validation import (
    Violations,
    canonical_record,
    check_mac,
    check_prefix,
    check_vsid,
    checked_record,
    subnet_overlaps,
    validate_lookup_record,
    validate_virtual_subnet,
)

from .support import check_invariants

macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(bytes)


@settings(deadline=None)  # the machine is shared: wall time per example is noise
@given(macs, st.sampled_from([":", "-"]), st.booleans())
def test_mac_normalizes_to_lowercase_colons(raw: bytes, separator: str, upper: bool) -> None:
    text = separator.join(f"{b:02x}" for b in raw)
    violations = Violations()
    mac = check_mac(text.upper() if upper else text, "mac", violations)
    expected_valid = not (raw[0] & 1) and raw != bytes(6)
    assert bool(mac) == expected_valid
    assert bool(violations.items) != expected_valid
    if mac:
        assert mac == ":".join(f"{b:02x}" for b in raw)
        assert check_mac(mac, "mac", Violations()) == mac


@settings(deadline=None)  # the machine is shared: wall time per example is noise
@given(st.text(max_size=20))
def test_mac_never_accepts_garbage(text: str) -> None:
    violations = Violations()
    mac = check_mac(text, "m", violations)
    assert (mac == "") == bool(violations.items) or (not text and mac == "")
    if mac:
        assert len(mac) == 17


@settings(deadline=None)  # the machine is shared: wall time per example is noise
@given(st.integers(0, 2**32 - 1))
def test_vsid_range(vsid: int) -> None:
    violations = Violations()
    check_vsid(vsid, "vsid", violations)
    assert (not violations.items) == (MIN_VSID <= vsid <= MAX_VSID)


@settings(deadline=None)  # the machine is shared: wall time per example is noise
@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_prefixes_are_canonical_and_reject_host_bits(address: int, length: int) -> None:
    ip = ipaddress.IPv4Address(address)
    network = ipaddress.IPv4Network((address, length), strict=False)
    violations = Violations()
    prefix = check_prefix(f"{ip}/{length}", "p", violations)
    if network.network_address == ip:
        assert prefix == str(network)
    else:
        assert prefix == ""
        assert "host bits" in violations.items[0].description


prefix_strategy = st.builds(
    lambda a, n: str(ipaddress.IPv4Network((a, n), strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(8, 30),
)


@settings(deadline=None)  # the machine is shared: wall time per example is noise
@given(prefix_strategy, prefix_strategy)
def test_subnet_overlap_is_symmetric_and_matches_ipaddress(a: str, b: str) -> None:
    first = types_pb2.VirtualSubnet(vsid=5000, rdid="r", ca_prefixes=[a])
    second = types_pb2.VirtualSubnet(vsid=5001, rdid="r", ca_prefixes=[b])
    overlaps = ipaddress.IPv4Network(a).overlaps(ipaddress.IPv4Network(b))
    for mine, theirs in ((first, second), (second, first)):
        if overlaps:
            with pytest.raises(PolicyConflict):
                subnet_overlaps(mine, [theirs])
        else:
            subnet_overlaps(mine, [theirs])


@settings(deadline=None)  # the machine is shared: wall time per example is noise
@given(st.integers(0, 2**40), st.binary(max_size=40))
def test_page_tokens_round_trip(revision: int, suffix: bytes) -> None:
    """A token of a key round-trips; one whose key is not UTF-8 (no key of the table is: a crafted
    token) or not under the listing's prefix is INVALID_ARGUMENT."""
    prefix = b"/overland/v1/table/"
    token = encode_page_token(revision, prefix + suffix)
    try:
        suffix.decode()
    except UnicodeDecodeError:
        with pytest.raises(InvalidPolicy, match="page_token"):
            parse_page(types_pb2.PageRequest(page_token=token), prefix)
        return
    page = parse_page(types_pb2.PageRequest(page_token=token), prefix)
    assert page.cursor is not None
    assert (page.cursor.revision, page.cursor.start) == (revision, prefix + suffix)
    with pytest.raises(InvalidPolicy):
        parse_page(types_pb2.PageRequest(page_token=token), b"/overland/v1/pa/")


ipv4_text = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda a: str(ipaddress.IPv4Address(a))),
    st.sampled_from(
        ["224.0.0.1", "127.0.0.1", "0.0.0.0", "255.255.255.255", "01.2.3.4", " 1.2.3.4", "1.2.3"]
    ),
)
mac_text = st.one_of(
    macs.map(lambda raw: ":".join(f"{b:02x}" for b in raw)),
    macs.map(lambda raw: "-".join(f"{b:02X}" for b in raw)),
    st.sampled_from(["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "aa:bb:cc:dd:ee"]),
)


@settings(deadline=None)
@given(
    ipv4_text,
    ipv4_text,
    mac_text,
    st.integers(0, 2**24),
    st.text(max_size=8),
    st.integers(0, 3),
    st.integers(0, 4),
    st.integers(0, 9),
    st.sampled_from([b"", b"\xf8\x07\x01", b"\xfa\x07\x03abc"]),
)
def test_fast_record_check_agrees_with_the_full_one(
    ca: str, pa: str, mac: str, vsid: int, vm_name: str, rule: int, kind: int, revision: int, unknown: bytes
) -> None:
    # Values outside the enums too: proto3 enums are open, and a client may send a newer one.
    record = types_pb2.LookupRecord(
        ca=ca,
        pa=pa,
        mac=mac,
        vsid=vsid,
        vm_name=vm_name,
        rule=cast(types_pb2.LookupRule, rule),
        type=cast(types_pb2.LookupType, kind),
        revision=revision,
    )
    # A client may send fields this server does not know (field 127 here): they are not stored.
    received = types_pb2.LookupRecord.FromString(record.SerializeToString() + unknown)
    fast = canonical_record(received)
    own = types_pb2.LookupRecord.FromString(received.SerializeToString())
    in_place = canonical_record(own, in_place=True)
    assert (fast is None) == (in_place is None)
    if fast is not None and in_place is not None:
        assert in_place.SerializeToString() == fast.SerializeToString()
    try:
        full = checked_record(received)
    except InvalidPolicy:
        assert fast is None
    else:
        assert fast is None or fast.SerializeToString() == full.SerializeToString()


@settings(deadline=None)
@given(
    st.builds("{}.{}".format, st.sampled_from(["192.0.2", "198.51.100", "203.0.113"]), st.integers(0, 255)),
    macs.filter(lambda raw: not raw[0] & 1 and raw != bytes(6)).map(lambda raw: raw.hex(":")),
    st.booleans(),
    st.integers(0, 9),
    st.sampled_from([b"", b"\xf8\x07\x01", b"\xfa\x07\x03abc"]),
)
def test_in_place_normalization_matches_the_copy(
    ca: str, mac: str, upper: bool, revision: int, unknown: bytes
) -> None:
    record = types_pb2.LookupRecord(
        ca=ca, vsid=5000, mac=mac.upper() if upper else mac, pa="198.18.0.1", vm_name="vm", revision=revision
    )
    received = types_pb2.LookupRecord.FromString(record.SerializeToString() + unknown)
    copy = canonical_record(received)
    assert copy is not None
    in_place = canonical_record(received, in_place=True)
    assert in_place is received
    # Same bytes: no revision, no unknown fields, the MAC in lower case, rule and type filled in.
    assert in_place.SerializeToString() == copy.SerializeToString()
    assert (in_place.revision, in_place.mac, in_place.rule) == (0, mac, types_pb2.LOOKUP_RULE_ENCAP)


def test_record_validation_fills_defaults() -> None:
    valid = validate_lookup_record(
        types_pb2.LookupRecord(ca=" 192.0.2.1", vsid=4096, mac="AA:BB:CC:DD:EE:FF", pa="198.18.0.1")
    )
    assert (valid.ca, valid.mac, valid.rule, valid.type) == (
        "192.0.2.1",
        "aa:bb:cc:dd:ee:ff",
        types_pb2.LOOKUP_RULE_ENCAP,
        types_pb2.LOOKUP_TYPE_STATIC,
    )


RDID = "6f1c1d1e-0000-4000-8000-000000000001"
VSIDS = (5000, 5001)
PAS = ("198.18.0.1", "198.18.0.2")


def _subnet_value(vsid: int) -> bytes:
    """A stored subnet of all three tenant prefixes (gateway 192.0.2.1)."""
    subnet = validate_virtual_subnet(
        types_pb2.VirtualSubnet(
            vsid=vsid, rdid=RDID, ca_prefixes=["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]
        )
    )
    return encode_entry(subnet, 1)


def _seeded_store(max_txn_ops: int) -> PolicyStore:
    kv = MemoryKV(max_txn_ops=max_txn_ops, progress_interval=None)
    puts = [Put(keys.pa_key(pa), b"") for pa in PAS]
    puts += [Put(keys.vsid_index_key(vsid), RDID.encode()) for vsid in VSIDS]
    puts += [Put(keys.subnet_key(RDID, vsid), _subnet_value(vsid)) for vsid in VSIDS]
    kv.txn([], puts)
    return PolicyStore(kv)


change_strategy = st.builds(
    lambda delete, vsid, ca, mac, pa: (delete, vsid, ca, mac, pa),
    st.booleans(),
    st.sampled_from(VSIDS),
    st.integers(0, 7),
    st.integers(0, 5),
    st.sampled_from(PAS),
)


def _apply_in_pieces(store: PolicyStore, changes: list[RecordChange], piece: int) -> int:
    """A bulk apply fed ``piece`` changes at a time, as a stream's messages feed it."""
    run = store.bulk_apply()
    for start in range(0, len(changes), piece):
        run.feed(changes[start : start + piece])
    return run.finish().applied


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(change_strategy, max_size=25), min_size=1, max_size=4),
    st.sampled_from([8, 12, 128]),
    st.integers(1, 30),
)
def test_bulk_apply_matches_a_sequential_model(
    batches: list[list[tuple[bool, int, int, int, str]]], max_txn_ops: int, piece: int
) -> None:
    """Apply random upsert/delete batches, fed in pieces of random size (small ops limits force
    many transactions and cuts) and compare with applying them one by one to a dict; a batch that
    fails must have applied exactly the changes before the failing one."""
    store = _seeded_store(max_txn_ops)
    model: dict[tuple[int, str], tuple[str, str]] = {}
    for batch in batches:
        changes = []
        for delete, vsid, ca_index, mac_index, pa in batch:
            ca = f"192.0.2.{ca_index + 2}"  # past the network and gateway addresses
            if delete:
                changes.append(RecordChange(Mode.DELETE_IF_PRESENT, types_pb2.LookupRecord(vsid=vsid, ca=ca)))
            else:
                rec = types_pb2.LookupRecord(ca=ca, vsid=vsid, mac=f"02:00:00:00:00:0{mac_index}", pa=pa)
                changes.append(RecordChange(Mode.UPSERT, validate_lookup_record(rec)))
        expected = dict(model)
        failed_at = None
        for position, change in enumerate(changes):
            key = (change.record.vsid, change.record.ca)
            if change.mode is Mode.DELETE_IF_PRESENT:
                expected.pop(key, None)
                continue
            holder = next(
                (k for k, v in expected.items() if k[0] == key[0] and v[0] == change.record.mac and k != key),
                None,
            )
            if holder is not None:
                failed_at = position
                break
            expected[key] = (change.record.mac, change.record.pa)
        if failed_at is None:
            assert _apply_in_pieces(store, changes, piece) == len(changes)
        else:
            with pytest.raises(ResourceExists, match=f"{failed_at} records applied"):
                _apply_in_pieces(store, changes, piece)
        model = expected
        stored = {}
        for kv in store.kv.range(keys.TABLE_PREFIX).kvs:
            parsed = keys.parse_key(kv.key)
            if parsed is not None and parsed.kind == keys.KIND_RECORD:
                rec = types_pb2.StoreEntry.FromString(kv.value).lookup_record
                stored[(rec.vsid, rec.ca)] = (rec.mac, rec.pa)
        assert stored == model
        assert check_invariants(store.kv) == len(model)


def test_a_stream_fed_in_small_messages_commits_full_transactions_and_holds_little() -> None:
    store = _seeded_store(128)
    kv = store.kv
    changes = [
        RecordChange(
            Mode.UPSERT,
            validate_lookup_record(
                types_pb2.LookupRecord(
                    ca=f"198.51.100.{n % 250 + 2}" if n < 250 else f"203.0.113.{n % 250 + 2}",
                    vsid=VSIDS[0],
                    mac=f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}",
                    pa=PAS[0],
                )
            ),
        )
        for n in range(500)
    ]
    whole = store.bulk_apply()
    whole.feed(changes)
    expected_transactions = whole.finish().transactions
    kv.txn([], [Delete(keys.records_prefix(RDID), prefix=True), Delete(keys.MAC_INDEX_PREFIX, prefix=True)])
    run = store.bulk_apply()
    for start in range(0, len(changes), 7):
        run.feed(changes[start : start + 7])
        # What is not committed yet is less than a transaction's worth plus the message just fed.
        assert start + 7 - run.applied < kv.max_txn_ops + 7
    result = run.finish()
    assert (result.applied, result.transactions) == (500, expected_transactions)
    assert check_invariants(kv) == 500


def test_planner_cuts_before_a_key_written_twice_and_within_the_ops_limit() -> None:
    state = TableState()
    state.learn(keys.vsid_index_key(5000), _kv(keys.vsid_index_key(5000), RDID.encode()))
    state.learn(keys.pa_key(PAS[0]), _kv(keys.pa_key(PAS[0]), b""))
    state.learn(keys.subnet_key(RDID, 5000), _kv(keys.subnet_key(RDID, 5000), _subnet_value(5000)))
    changes = [
        RecordChange(
            Mode.UPSERT,
            validate_lookup_record(
                types_pb2.LookupRecord(
                    ca=f"192.0.2.{i + 2}", vsid=5000, mac=f"02:00:00:00:01:{i:02x}", pa=PAS[0]
                )
            ),
        )
        for i in range(100)
    ]
    changes.insert(3, changes[1])
    plan = plan_transaction(changes, 0, state, 128, lambda r: r.SerializeToString())
    assert plan.end == 3
    assert plan.assumes
    plan = plan_transaction(changes, 3, state, 16, lambda r: r.SerializeToString())
    # Three shared compares (VSID, subnet, PA) plus two per record, two puts per record: 6 fit in 16.
    assert plan.end - plan.start == 6
    assert max(len(plan.compares), len(plan.success)) <= 16
    assert all(isinstance(c, Compare) for c in plan.compares)
    assert [g.key for g in plan.failure_reads()] == [c.key for c in plan.compares]


def test_planner_errors_only_for_the_first_change() -> None:
    state = TableState()
    state.learn(keys.vsid_index_key(5000), None)
    change = RecordChange(
        Mode.UPSERT,
        validate_lookup_record(
            types_pb2.LookupRecord(ca="192.0.2.1", vsid=5000, mac="02:00:00:00:00:01", pa=PAS[0])
        ),
    )
    state.learn(keys.pa_key(PAS[0]), None)
    with pytest.raises(PolicyError):
        plan_transaction([change], 0, state, 128, lambda r: b"")


def _kv(key: bytes, value: bytes) -> KeyValue:
    return KeyValue(key=key, value=value, create_revision=2, mod_revision=2, version=1)
