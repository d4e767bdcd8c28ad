"""The pure routing table: reset/update deltas, index consistency, idempotence, compaction re-list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.kv import EventType, KeyValue, WatchEvent
from services.common.schema import (
    KIND_PA,
    KIND_RECORD,
    KIND_SUBNET,
    StoreEntry,
    decode_snapshot,
    key_of,
    keys,
)
from services.common.table import RoutingTable, TableChange
from tests.unit.vswitch.table_factory import (
    PAS,
    RDIDS,
    SUBNET_PREFIXES,
    as_map,
    domain,
    operations,
    provider,
    record,
    route,
    subnet,
)


def _changes(ops: list[tuple[bool, StoreEntry]], first_revision: int = 1) -> list[TableChange]:
    return [
        TableChange(key_of(entry), entry if write else None, first_revision + i)
        for i, (write, entry) in enumerate(ops)
    ]


def _final_state(ops: list[tuple[bool, StoreEntry]]) -> dict[bytes, StoreEntry]:
    state: dict[bytes, StoreEntry] = {}
    for write, entry in ops:
        if write:
            state[key_of(entry)] = entry
        else:
            state.pop(key_of(entry), None)
    return state


def _watch_event(change: TableChange) -> WatchEvent:
    value = change.entry.SerializeToString() if change.entry is not None else b""
    kv = KeyValue(change.key, value, create_revision=1, mod_revision=change.revision, version=1)
    return WatchEvent(EventType.PUT if change.entry is not None else EventType.DELETE, kv)


def _check_indexes(table: RoutingTable) -> None:
    """Every query answers what a scan of ``entries()`` answers."""
    all_entries = list(table.entries().values())
    records = [e.lookup_record for e in all_entries if e.HasField("lookup_record")]
    subnets = [e.virtual_subnet for e in all_entries if e.HasField("virtual_subnet")]
    routes = [e.customer_route for e in all_entries if e.HasField("customer_route")]
    providers = [e.provider_address for e in all_entries if e.HasField("provider_address")]
    domains = [e.routing_domain for e in all_entries if e.HasField("routing_domain")]
    assert table.counts() == {
        "pa": len(providers),
        "domain": len(domains),
        "subnet": len(subnets),
        "record": len(records),
        "route": len(routes),
    }
    assert sorted(p.pa_ip for p in table.providers()) == sorted(p.pa_ip for p in providers)
    for pa in PAS:
        assert table.records_on_pa(pa) == sorted(
            (r for r in records if r.pa == pa), key=lambda r: keys.record_key(r.rdid, r.vsid, r.ca)
        )
        assert (table.provider(pa) is not None) == any(p.pa_ip == pa for p in providers)
    for vsid in SUBNET_PREFIXES:
        mine = [r for r in records if r.vsid == vsid]
        assert sorted(r.ca for r in table.records_of_vsid(vsid)) == sorted(r.ca for r in mine)
        for r in mine:
            assert table.record(vsid, r.ca) == r
        macs = {r.mac for r in mine}
        for mac in macs:
            found = table.record_by_mac(vsid, mac.upper())
            assert found is not None
            assert found.mac == mac
        wildcards = [r for r in mine if r.type == types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD]
        assert (table.wildcard(vsid) is not None) == bool(wildcards)
        assert table.subnet(vsid) == next((s for s in subnets if s.vsid == vsid), None)
    for rdid in RDIDS:
        assert table.subnets_of(rdid) == sorted((s for s in subnets if s.rdid == rdid), key=lambda s: s.vsid)
        assert len(table.routes_of(rdid)) == sum(1 for r in routes if r.rdid == rdid)
        assert table.domain(rdid) == next((d for d in domains if d.rdid == rdid), None)


@settings(max_examples=150, deadline=None)
@given(operations, st.lists(st.integers(1, 6), max_size=10))
def test_replaying_events_in_any_batches_equals_reset_of_the_final_state(
    ops: list[tuple[bool, StoreEntry]], cuts: list[int]
) -> None:
    changes = _changes(ops)
    replayed = RoutingTable()
    start = 0
    for size in [*cuts, len(changes)]:
        replayed.update(changes[start : start + size])
        start += size
    final = _final_state(ops)
    fresh = RoutingTable()
    fresh.reset(final, len(ops))
    assert dict(replayed.entries()) == dict(fresh.entries())
    assert replayed.revision == fresh.revision == len(ops)
    _check_indexes(replayed)
    _check_indexes(fresh)


@settings(max_examples=100, deadline=None)
@given(operations)
def test_watch_events_and_table_changes_apply_alike(ops: list[tuple[bool, StoreEntry]]) -> None:
    changes = _changes(ops)
    from_changes, from_events = RoutingTable(), RoutingTable()
    from_changes.update(changes)
    from_events.update([_watch_event(c) for c in changes])
    # Watch events carry the mod revision into the resource; compare the resources without it.
    for table in (from_changes, from_events):
        for entry in table.entries().values():
            getattr(entry, str(entry.WhichOneof("resource"))).revision = 0
    assert dict(from_changes.entries()) == dict(from_events.entries())


@settings(max_examples=100, deadline=None)
@given(operations)
def test_update_is_idempotent(ops: list[tuple[bool, StoreEntry]]) -> None:
    changes = _changes(ops)
    table = RoutingTable()
    table.update(changes)
    before = dict(table.entries())
    again = table.update(changes)
    assert not again
    assert dict(table.entries()) == before
    # Without revisions (TableChange revision 0) the second pass is a no-op too: nothing differs.
    unrevisioned = [TableChange(c.key, c.entry) for c in changes]
    table.update(unrevisioned)
    assert not table.update(unrevisioned)


@settings(max_examples=150, deadline=None)
@given(operations, operations)
def test_reset_delta_turns_the_old_state_into_the_new_one(
    old_ops: list[tuple[bool, StoreEntry]], new_ops: list[tuple[bool, StoreEntry]]
) -> None:
    old, new = _final_state(old_ops), _final_state(new_ops)
    table = RoutingTable()
    table.reset(old, 10)
    delta = table.reset(new, 20)
    assert delta.reset
    assert delta.revision == table.revision == 20
    assert {c.key for c in delta.removed()} == old.keys() - new.keys()
    assert {c.key for c in delta.added()} == new.keys() - old.keys()
    assert {c.key for c in delta.changed()} == {k for k in old.keys() & new.keys() if old[k] != new[k]}
    rebuilt = dict(old)
    for change in delta.changes:
        assert change.before == old.get(change.key)
        if change.after is None:
            del rebuilt[change.key]
        else:
            rebuilt[change.key] = change.after
    assert rebuilt == new
    _check_indexes(table)


def test_reset_after_compaction_synthesizes_the_missed_deletes() -> None:
    table = RoutingTable()
    kept = record(4096, "rd-blue", "192.0.2.1", "198.18.0.1")
    vanished = record(4096, "rd-blue", "192.0.2.2", "198.18.0.2")
    table.reset(as_map(provider("198.18.0.1"), provider("198.18.0.2"), kept, vanished), 5)
    delta = table.reset(as_map(provider("198.18.0.1"), kept), 42)
    assert [(c.key, c.kind) for c in delta.removed()] == [
        (keys.pa_key("198.18.0.2"), KIND_PA),
        (key_of(vanished), KIND_RECORD),
    ]
    assert delta.removed(KIND_RECORD)[0].before == vanished
    assert not delta.added()
    assert not delta.changed()
    assert table.records_on_pa("198.18.0.2") == []
    assert table.revision == 42


def test_delta_reports_old_and_new_values_of_a_moved_record() -> None:
    table = RoutingTable()
    before = record(4096, "rd-blue", "192.0.2.1", "198.18.0.1")
    table.update([TableChange(key_of(before), before, 3)])
    moved = record(4096, "rd-blue", "192.0.2.1", "198.18.0.2")
    delta = table.update([TableChange(key_of(moved), moved, 4)])
    (change,) = delta.changed(KIND_RECORD)
    assert change.before is not None
    assert change.after is not None
    assert change.before.lookup_record.pa == "198.18.0.1"
    assert change.after.lookup_record.pa == "198.18.0.2"
    assert table.records_on_pa("198.18.0.1") == []
    assert [r.ca for r in table.records_on_pa("198.18.0.2")] == ["192.0.2.1"]


def test_put_then_delete_in_one_batch_is_no_change() -> None:
    table = RoutingTable()
    entry = subnet(4096, "rd-blue", "192.0.2.0/25")
    delta = table.update([TableChange(key_of(entry), entry, 7), TableChange(key_of(entry), None, 8)])
    assert not delta
    assert table.revision == 8
    assert table.subnet(4096) is None


def test_events_at_or_below_the_applied_revision_are_skipped() -> None:
    table = RoutingTable()
    old = subnet(4096, "rd-blue", "192.0.2.0/25")
    table.reset(as_map(old), 10)
    stale = subnet(4096, "rd-blue", "192.0.2.0/26")
    assert not table.update([TableChange(key_of(stale), stale, 10)])
    fresh = table.update([TableChange(key_of(stale), stale, 11)])
    assert [c.kind for c in fresh.changed()] == [KIND_SUBNET]


def test_progress_revision_advances_without_events() -> None:
    table = RoutingTable()
    delta = table.update([], revision=99)
    assert not delta
    assert delta.revision == table.revision == 99


def test_foreign_keys_are_ignored_and_bad_values_rejected() -> None:
    table = RoutingTable()
    good = record(4096, "rd-blue", "192.0.2.1", "198.18.0.1")
    table.update([TableChange(key_of(good), good, 2)])
    garbage = KeyValue(key_of(good), b"\xff\xff\xff", 1, 3, 2)
    mismatched = record(4097, "rd-blue", "192.0.2.130", "198.18.0.1")
    host = KeyValue(keys.host_key("h1"), b"whatever", 1, 5, 1)
    index = KeyValue(keys.vsid_index_key(4096), b"rd-blue", 1, 6, 1)
    delta = table.update(
        [
            WatchEvent(EventType.PUT, garbage),
            # A record under another record's key contradicts the key: rejected.
            TableChange(keys.record_key("rd-blue", 4096, "192.0.2.9"), mismatched, 4),
            WatchEvent(EventType.PUT, host),
            WatchEvent(EventType.PUT, index),
        ]
    )
    assert set(delta.rejected) == {key_of(good), keys.record_key("rd-blue", 4096, "192.0.2.9")}
    # The store no longer holds a usable value for the good key: it leaves the table.
    assert [c.key for c in delta.removed()] == [key_of(good)]
    assert len(table) == 0
    assert table.revision == 6


def test_output_only_identity_fields_are_filled_from_the_key() -> None:
    table = RoutingTable()
    bare = record(4096, "", "192.0.2.1", "198.18.0.1")
    table.update([TableChange(keys.record_key("rd-blue", 4096, "192.0.2.1"), bare, 2)])
    stored = table.record(4096, "192.0.2.1")
    assert stored is not None
    assert stored.rdid == "rd-blue"
    # The caller's entry is not mutated.
    assert bare.lookup_record.rdid == ""


def test_decode_snapshot_sets_revisions_and_drops_garbage() -> None:
    entry = domain("rd-blue", "Blue")
    kvs = [
        KeyValue(key_of(entry), entry.SerializeToString(), 3, 17, 2),
        KeyValue(keys.pa_key("198.18.0.9"), b"\x0a\xff", 4, 18, 1),
    ]
    snapshot = decode_snapshot(kvs)
    assert list(snapshot) == [key_of(entry)]
    assert snapshot[key_of(entry)].routing_domain.revision == 17


def test_prefix_queries_pick_the_most_specific_and_lowest_metric() -> None:
    table = RoutingTable()
    table.reset(
        as_map(
            subnet(4096, "rd-blue", "192.0.2.0/25"),
            subnet(4097, "rd-blue", "192.0.2.128/25", "198.51.100.0/24"),
            route("rd-blue", 4096, "0.0.0.0/0", "192.0.2.1", 5),
            route("rd-blue", 4096, "203.0.113.0/24", "192.0.2.2", 9),
            route("rd-blue", 4096, "203.0.113.0/24", "192.0.2.3", 1),
        ),
        1,
    )
    containing = table.subnet_containing("rd-blue", "198.51.100.7")
    assert containing is not None
    assert containing.vsid == 4097
    assert table.subnet_containing("rd-red", "192.0.2.7") is None
    assert [r.next_hop for r in table.routes_matching("rd-blue", "203.0.113.5")] == [
        "192.0.2.3",
        "192.0.2.2",
        "192.0.2.1",
    ]
    # The index follows changes.
    extra = route("rd-blue", 4096, "203.0.113.0/25", "192.0.2.4", 0)
    table.update([TableChange(key_of(extra), extra, 2)])
    assert table.routes_matching("rd-blue", "203.0.113.5")[0].next_hop == "192.0.2.4"
    assert table.routes_matching("rd-blue", "not-an-ip") == []
