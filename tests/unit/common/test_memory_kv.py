"""MemoryKV: property tests of its MVCC history against a replayed model, plus what only the fake
does (manual clock, failure injection, thread safety)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.clock import ManualClock
from services.common.kv import (
    Compare,
    Delete,
    EventType,
    KeyValue,
    KVCompactedError,
    KVRequestError,
    KVUnavailableError,
    KVWatchOverflowError,
    Op,
    Put,
    WatchBacklog,
    WatchBatch,
)
from services.common.memory_kv import MemoryKV, MemoryWatch

KEYS = [b"/a", b"/a/x", b"/a/y", b"/b", b"/c"]

put_ops = st.builds(Put, st.sampled_from(KEYS), st.binary(min_size=0, max_size=3))
delete_ops = st.builds(Delete, st.sampled_from([*KEYS, b"/a/", b"/"]), st.booleans())
txns = st.lists(st.one_of(put_ops, delete_ops), min_size=1, max_size=4)
histories = st.lists(
    st.tuples(st.sampled_from([None, *KEYS]), txns),  # an optional "absent" guard, then the ops
    min_size=1,
    max_size=25,
)


@dataclass(frozen=True)
class Row:
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


State = dict[bytes, Row]


def apply_model(state: State, ops: list[Op], revision: int) -> State:
    """What a transaction's ops do to the keyspace, written out the simple way."""
    after = dict(state)
    for op in ops:
        if isinstance(op, Put):
            old = after.get(op.key)
            after[op.key] = Row(
                op.value,
                old.create_revision if old else revision,
                revision,
                old.version + 1 if old else 1,
            )
        elif isinstance(op, Delete):
            for key in [k for k in after if (k.startswith(op.key) if op.prefix else k == op.key)]:
                del after[key]
    return after


def as_state(kvs: tuple[KeyValue, ...]) -> State:
    return {kv.key: Row(kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in kvs}


def run(history: list[tuple[bytes | None, list[Op]]]) -> tuple[MemoryKV, dict[int, State]]:
    """Apply ``history`` to a MemoryKV and to the model; returns the store and the model's state
    at every revision."""
    kv = MemoryKV(progress_interval=None)
    states: dict[int, State] = {1: {}}
    revision = 1
    for guard, ops in history:
        compares = [Compare.absent(guard)] if guard else []
        try:
            result = kv.txn(compares, ops)
        except KVRequestError:
            # Same key twice in one transaction: rejected whole, nothing changes.
            assert kv.current_revision() == revision
            continue
        if not result.succeeded:
            assert guard is not None
            assert guard in states[revision]
            assert result.revision == revision
            continue
        after = apply_model(states[revision], ops, revision + 1)
        if after != states[revision]:
            revision += 1
            states[revision] = after
        assert result.revision == revision
    assert kv.current_revision() == revision
    return kv, states


def replay(state: State, batches: list[WatchBatch]) -> State:
    after = dict(state)
    for batch in batches:
        for event in batch.events:
            if event.type is EventType.PUT:
                kv = event.kv
                after[kv.key] = Row(kv.value, kv.create_revision, kv.mod_revision, kv.version)
            else:
                after.pop(event.kv.key, None)
    return after


def drain(watch: MemoryWatch) -> list[WatchBatch]:
    """Every batch the watch has pending: progress is only sent once the watcher caught up."""
    watch.request_progress()
    batches = []
    for batch in watch:
        if batch.progress:
            break
        batches.append(batch)
    watch.cancel()
    return batches


@given(histories)
@settings(max_examples=150, deadline=None)
def test_range_at_every_revision_equals_the_replayed_model(
    history: list[tuple[bytes | None, list[Op]]],
) -> None:
    kv, states = run(history)
    for revision, state in states.items():
        assert as_state(kv.range(b"", revision=revision).kvs) == state
        assert as_state(kv.range(b"/a/", revision=revision).kvs) == {
            k: v for k, v in state.items() if k.startswith(b"/a/")
        }


@given(histories, st.data())
@settings(max_examples=150, deadline=None)
def test_watch_events_replayed_onto_a_snapshot_give_the_later_snapshot(
    history: list[tuple[bytes | None, list[Op]]], data: st.DataObject
) -> None:
    kv, states = run(history)
    latest = max(states)
    start = data.draw(st.integers(min_value=2, max_value=latest + 1), label="start")
    prefix = data.draw(st.sampled_from([b"", b"/a", b"/a/", b"/b"]), label="prefix")
    batches = drain(kv.watch(prefix, start))
    revisions = [event.kv.mod_revision for batch in batches for event in batch.events]
    assert revisions == sorted(revisions)
    assert all(r >= start for r in revisions)
    assert all(batch.revision == batch.events[-1].kv.mod_revision for batch in batches)

    def under(state: State) -> State:
        return {k: v for k, v in state.items() if k.startswith(prefix)}

    assert replay(under(states[start - 1]), batches) == under(states[latest])


@given(histories, st.data())
@settings(max_examples=100, deadline=None)
def test_compaction_keeps_everything_from_its_revision_on(
    history: list[tuple[bytes | None, list[Op]]], data: st.DataObject
) -> None:
    kv, states = run(history)
    latest = max(states)
    point = data.draw(st.integers(min_value=1, max_value=latest), label="compact at")
    if point > 1:
        kv.compact(point)
    for revision, state in states.items():
        if revision < point:
            with pytest.raises(KVCompactedError) as caught:
                kv.range(b"", revision=revision)
            assert caught.value.compact_revision == point
        else:
            assert as_state(kv.range(b"", revision=revision).kvs) == state
    if point > 1:
        with pytest.raises(KVCompactedError):
            drain(kv.watch(b"", point - 1))
    assert replay(states[point], drain(kv.watch(b"", point + 1))) == states[latest]


@given(histories, st.integers(min_value=1, max_value=4))
@settings(max_examples=100, deadline=None)
def test_pages_add_up_to_the_whole_range(history: list[tuple[bytes | None, list[Op]]], limit: int) -> None:
    kv, _ = run(history)
    whole = kv.range(b"/").kvs
    pages: list[KeyValue] = []
    start = None
    while True:
        page = kv.range(b"/", start=start, limit=limit)
        assert len(page.kvs) <= limit
        pages += page.kvs
        if not page.more:
            break
        start = page.kvs[-1].key + b"\0"
    assert tuple(pages) == whole


def test_leases_expire_on_the_injected_clock() -> None:
    clock = ManualClock()
    kv = MemoryKV(clock=clock, progress_interval=None)
    lease = kv.grant_lease(10)
    kv.txn([], [Put(b"/host", b"up", lease.id)])
    clock.advance(9)
    assert kv.refresh_lease(lease.id) == 10
    clock.advance(9)
    assert kv.get(b"/host") is not None
    clock.advance(2)
    assert kv.get(b"/host") is None
    assert kv.refresh_lease(lease.id) == 0


def test_a_key_moved_to_another_lease_survives_the_first() -> None:
    clock = ManualClock()
    kv = MemoryKV(clock=clock, progress_interval=None)
    short, long = kv.grant_lease(5), kv.grant_lease(50)
    kv.txn([], [Put(b"/k", b"1", short.id)])
    kv.txn([], [Put(b"/k", b"2", long.id)])
    clock.advance(10)
    assert kv.get(b"/k").value == b"2"  # type: ignore[union-attr]


def test_unavailable_store_fails_calls_and_breaks_watches() -> None:
    kv = MemoryKV(progress_interval=None)
    watch = kv.watch(b"/", 0)
    kv.set_available(False)
    with pytest.raises(KVUnavailableError):
        kv.get(b"/k")
    with pytest.raises(KVUnavailableError):
        next(iter(watch))
    assert kv.open_watches == 0
    kv.set_available(True)
    assert kv.txn([], [Put(b"/k", b"v")]).succeeded


def test_break_watches_keeps_calls_working() -> None:
    kv = MemoryKV(progress_interval=None)
    watch = kv.watch(b"/", 0)
    kv.break_watches()
    with pytest.raises(KVUnavailableError):
        next(iter(watch))
    revision = kv.txn([], [Put(b"/k", b"v")]).revision
    resumed = kv.watch(b"/", revision)
    assert [e.kv.key for e in next(iter(resumed)).events] == [b"/k"]


def test_close_ends_open_watches() -> None:
    kv = MemoryKV(progress_interval=None)
    watch = kv.watch(b"/", 0)
    kv.close()
    assert list(watch) == []


def test_compare_and_swap_from_many_threads_loses_no_update() -> None:
    kv = MemoryKV(progress_interval=None)
    kv.txn([], [Put(b"/counter", b"0")])
    watch = kv.watch(b"/counter", 0)
    per_thread, threads = 50, 4

    def increment() -> None:
        done = 0
        while done < per_thread:
            current = kv.get(b"/counter")
            assert current is not None
            bumped = str(int(current.value) + 1).encode()
            guard = Compare.mod_revision_is(b"/counter", current.mod_revision)
            if kv.txn([guard], [Put(b"/counter", bumped)]).succeeded:
                done += 1

    workers = [threading.Thread(target=increment) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert kv.get(b"/counter").value == str(per_thread * threads).encode()  # type: ignore[union-attr]
    values = [int(e.kv.value) for batch in drain(watch) for e in batch.events]
    assert values == list(range(1, per_thread * threads + 1))


def test_a_watch_consumer_that_stops_taking_with_a_full_backlog_is_ended_and_resumes() -> None:
    clock = ManualClock()
    kv = MemoryKV(progress_interval=None, clock=clock)
    first = kv.txn([], [Put(b"/w/first", b"x")]).revision
    watch = kv.watch(b"/w/", first, backlog=WatchBacklog(max_bytes=1000, stall_seconds=5))
    assert next(watch).revision == first
    written = [kv.txn([], [Put(b"/w/k%d" % n, b"v" * 100)]).revision for n in range(20)]
    clock.advance(5)
    with pytest.raises(KVWatchOverflowError) as overflow:
        next(watch)
    assert overflow.value.revision == first
    # Watching again from the next revision gives every later event exactly once.
    resumed = kv.watch(b"/w/", overflow.value.revision + 1)
    seen: list[int] = []
    while len(seen) < len(written):
        seen += [event.kv.mod_revision for event in next(resumed).events]
    assert seen == written
    resumed.cancel()


def test_a_watch_consumer_that_keeps_taking_is_never_ended() -> None:
    clock = ManualClock()
    kv = MemoryKV(progress_interval=None, clock=clock)
    watch = kv.watch(b"/w/", 0, backlog=WatchBacklog(max_bytes=10, stall_seconds=5))
    written = [kv.txn([], [Put(b"/w/k%d" % n, b"v" * 100)]).revision for n in range(20)]
    seen: list[int] = []
    # Full from the start, but the consumer takes something every 4 s.
    while len(seen) < len(written):
        clock.advance(4)
        seen += [event.kv.mod_revision for event in next(watch).events]
        kv.txn([], [Put(b"/w/other", b"v" * 100)])
    assert seen[: len(written)] == written
    watch.cancel()
