"""The KV contract, run against both implementations: MemoryKV and EtcdKV on a real etcd.

What the services rely on must hold for both, so unit tests on MemoryKV mean something.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from services.common.kv import (
    KV,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    Get,
    KVCompactedError,
    KVLeaseNotFoundError,
    KVRequestError,
    KVTooManyOpsError,
    KVUnavailableError,
    Put,
    WatchBatch,
    WatchEvent,
)

# Upper bound for anything the store does on its own (lease expiry, progress); a bound, not a timing.
PATIENCE_SECONDS = 15.0


@pytest.fixture(params=["memory_kv", "etcd_kv"])
def kv(request: pytest.FixtureRequest) -> Any:
    """Each test runs once on MemoryKV and once on EtcdKV over a real etcd (tests/conftest.py)."""
    return request.getfixturevalue(request.param)


def put(kv: KV, key: bytes, value: bytes, lease: int = 0) -> int:
    return kv.txn([], [Put(key, value, lease)]).revision


def next_events(stream: Any, timeout: float = PATIENCE_SECONDS) -> WatchBatch:
    """The next batch that has events, skipping progress notifications."""
    deadline = time.monotonic() + timeout
    for batch in stream:
        if batch.events:
            return batch
        assert time.monotonic() < deadline, "no events arrived"
    raise AssertionError("the watch ended")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- put / get / revisions ---------------------------------------------------------------------


def test_put_get_tracks_revisions_and_versions(kv: KV) -> None:
    assert kv.get(b"/k") is None
    first = put(kv, b"/k", b"v1")
    second = put(kv, b"/k", b"v2")
    assert second == first + 1
    got = kv.get(b"/k")
    assert got is not None
    assert (got.value, got.create_revision, got.mod_revision, got.version) == (b"v2", first, second, 2)
    assert kv.current_revision() == second


def test_one_revision_per_writing_txn_and_none_for_reads(kv: KV) -> None:
    before = kv.current_revision()
    result = kv.txn([], [Put(b"/a", b"1"), Put(b"/b", b"2"), Put(b"/c", b"3")])
    assert result.revision == before + 1
    assert {kv.get(k).mod_revision for k in (b"/a", b"/b", b"/c")} == {before + 1}  # type: ignore[union-attr]
    assert kv.txn([], [Get(b"/a")]).revision == before + 1
    # Deleting nothing changes nothing.
    assert kv.txn([], [Delete(b"/missing")]).revision == before + 1
    assert kv.current_revision() == before + 1


def test_delete_then_recreate_starts_a_new_generation(kv: KV) -> None:
    put(kv, b"/g", b"1")
    put(kv, b"/g", b"2")
    kv.txn([], [Delete(b"/g")])
    assert kv.get(b"/g") is None
    again = put(kv, b"/g", b"3")
    got = kv.get(b"/g")
    assert got is not None
    assert (got.version, got.create_revision) == (1, again)


# -- range -------------------------------------------------------------------------------------


def test_range_pages_in_key_order(kv: KV) -> None:
    keys = [f"/r/{i:03d}".encode() for i in range(25)]
    kv.txn([], [Put(k, k) for k in reversed(keys)])
    put(kv, b"/rr", b"outside the prefix")
    seen: list[bytes] = []
    start: bytes | None = None
    pages = 0
    while True:
        page = kv.range(b"/r/", start=start, limit=10)
        seen += [item.key for item in page.kvs]
        pages += 1
        if not page.more:
            break
        start = page.kvs[-1].key + b"\0"
    assert seen == keys
    assert pages == 3
    first = kv.range(b"/r/", limit=10)
    assert first.more
    assert first.count == 25
    assert len(first.kvs) == 10


def test_range_keys_only_and_count_only(kv: KV) -> None:
    kv.txn([], [Put(b"/q/1", b"one"), Put(b"/q/2", b"two")])
    keys_only = kv.range(b"/q/", keys_only=True)
    assert [(item.key, item.value) for item in keys_only.kvs] == [(b"/q/1", b""), (b"/q/2", b"")]
    counted = kv.range(b"/q/", count_only=True)
    assert counted.kvs == ()
    assert counted.count == 2


def test_range_over_the_whole_keyspace(kv: KV) -> None:
    kv.txn([], [Put(b"/x", b"1"), Put(b"a", b"2")])
    assert [item.key for item in kv.range(b"").kvs] == [b"/x", b"a"]


def test_range_at_a_past_revision(kv: KV) -> None:
    first = put(kv, b"/p/a", b"1")
    put(kv, b"/p/a", b"2")
    kv.txn([], [Put(b"/p/b", b"3"), Delete(b"/p/a")])
    assert [(i.key, i.value) for i in kv.range(b"/p/", revision=first).kvs] == [(b"/p/a", b"1")]
    assert [(i.key, i.value) for i in kv.range(b"/p/", revision=first + 1).kvs] == [(b"/p/a", b"2")]
    assert [(i.key, i.value) for i in kv.range(b"/p/").kvs] == [(b"/p/b", b"3")]


def test_range_below_compaction_raises_with_the_compact_revision(kv: KV) -> None:
    old = put(kv, b"/c", b"1")
    put(kv, b"/c", b"2")
    newest = put(kv, b"/c", b"3")
    kv.compact(newest - 1)
    with pytest.raises(KVCompactedError) as caught:
        kv.range(b"/c", revision=old)
    assert caught.value.compact_revision == newest - 1
    # The compaction point itself stays readable.
    assert kv.range(b"/c", revision=newest - 1).kvs[0].value == b"2"
    with pytest.raises(KVCompactedError):
        kv.compact(newest - 1)


def test_future_revisions_are_rejected(kv: KV) -> None:
    current = kv.current_revision()
    with pytest.raises(KVRequestError):
        kv.range(b"/", revision=current + 10)
    with pytest.raises(KVRequestError):
        kv.compact(current + 10)


# -- transactions ------------------------------------------------------------------------------


def test_txn_absent_guard_creates_only_once(kv: KV) -> None:
    first = kv.txn([Compare.absent(b"/t")], [Put(b"/t", b"mine")], [Get(b"/t")])
    assert first.succeeded
    second = kv.txn([Compare.absent(b"/t")], [Put(b"/t", b"theirs")], [Get(b"/t")])
    assert not second.succeeded
    assert [item.value for item in second.responses[0]] == [b"mine"]
    assert kv.get(b"/t").value == b"mine"  # type: ignore[union-attr]


def test_txn_compares_on_mod_revision_value_and_existence(kv: KV) -> None:
    revision = put(kv, b"/m", b"v")
    assert kv.txn([Compare.exists(b"/m")], []).succeeded
    assert not kv.txn([Compare.exists(b"/nothing")], []).succeeded
    assert kv.txn([Compare.mod_revision_is(b"/m", revision)], [Put(b"/m", b"w")]).succeeded
    # The revision moved: a stale writer fails and its branch does not run.
    stale = kv.txn([Compare.mod_revision_is(b"/m", revision)], [Put(b"/m", b"stale")], [Get(b"/m")])
    assert not stale.succeeded
    assert kv.get(b"/m").value == b"w"  # type: ignore[union-attr]
    assert kv.txn([Compare.value_is(b"/m", b"w")], []).succeeded
    assert not kv.txn([Compare.value_is(b"/m", b"v")], []).succeeded
    # No value compare holds on an absent key; numeric ones compare against 0.
    assert not kv.txn([Compare.value_is(b"/nothing", b"")], []).succeeded
    assert kv.txn([Compare(b"/m", CompareTarget.VERSION, CompareOp.GREATER, 1)], []).succeeded
    assert kv.txn([Compare(b"/m", CompareTarget.CREATE, CompareOp.LESS, revision + 1)], []).succeeded
    assert kv.txn([Compare(b"/m", CompareTarget.VALUE, CompareOp.NOT_EQUAL, b"v")], []).succeeded


def test_txn_reads_see_earlier_writes_and_prefix_deletes(kv: KV) -> None:
    kv.txn([], [Put(b"/d/1", b"a"), Put(b"/d/2", b"b"), Put(b"/e", b"c")])
    result = kv.txn([], [Delete(b"/d/", prefix=True), Put(b"/f", b"new"), Get(b"/", prefix=True)])
    assert result.responses[:2] == ((), ())
    assert [item.key for item in result.responses[2]] == [b"/e", b"/f"]
    assert kv.range(b"/d/").kvs == ()


def test_txn_max_ops_is_enforced(kv: KV) -> None:
    limit = kv.max_txn_ops
    assert kv.txn([], [Put(f"/o/{i}".encode(), b"") for i in range(limit)]).succeeded
    with pytest.raises(KVTooManyOpsError):
        kv.txn([], [Put(f"/o/{i}".encode(), b"") for i in range(limit + 1)])
    with pytest.raises(KVTooManyOpsError):
        kv.txn([Compare.absent(f"/o/{i}".encode()) for i in range(limit + 1)], [])


def test_txn_rejects_a_key_written_twice(kv: KV) -> None:
    with pytest.raises(KVRequestError):
        kv.txn([], [Put(b"/dup", b"1"), Put(b"/dup", b"2")])
    with pytest.raises(KVRequestError):
        kv.txn([], [Put(b"/dup/a", b"1"), Delete(b"/dup/", prefix=True)])
    assert kv.get(b"/dup") is None


def test_a_prefix_compare_holds_for_every_key_under_the_prefix(kv: KV) -> None:
    """etcd's range compare: ``unchanged_since`` holds until a key under the prefix is written, an
    empty prefix holds (an absent key's mod revision is 0), and a value compare on none fails."""
    assert kv.txn([Compare.unchanged_since(b"/p/", 0)], []).succeeded
    assert not kv.txn(
        [Compare(b"/p/", CompareTarget.VALUE, CompareOp.EQUAL, b"x", prefix=True)], []
    ).succeeded
    put(kv, b"/p/a", b"1")
    read_at = put(kv, b"/p/b", b"1")
    put(kv, b"/q", b"outside")
    assert kv.txn([Compare.unchanged_since(b"/p/", read_at)], []).succeeded
    assert not kv.txn([Compare.unchanged_since(b"/p/", read_at - 1)], []).succeeded
    kv.txn([], [Delete(b"/p/a")])
    assert kv.txn([Compare.unchanged_since(b"/p/", read_at)], []).succeeded
    put(kv, b"/p/c", b"new")
    assert not kv.txn([Compare.unchanged_since(b"/p/", read_at)], []).succeeded


# -- leases ------------------------------------------------------------------------------------


def test_lease_revoke_deletes_its_keys(kv: KV) -> None:
    lease = kv.grant_lease(30)
    put(kv, b"/l/a", b"1", lease.id)
    put(kv, b"/l/b", b"2", lease.id)
    put(kv, b"/l/c", b"3")
    assert kv.get(b"/l/a").lease == lease.id  # type: ignore[union-attr]
    assert kv.refresh_lease(lease.id) > 0
    kv.revoke_lease(lease.id)
    assert [item.key for item in kv.range(b"/l/").kvs] == [b"/l/c"]
    assert kv.refresh_lease(lease.id) <= 0
    with pytest.raises(KVLeaseNotFoundError):
        kv.revoke_lease(lease.id)
    with pytest.raises(KVLeaseNotFoundError):
        put(kv, b"/l/d", b"4", lease.id)


def test_lease_expiry_deletes_keys_and_tells_watchers(kv: KV) -> None:
    lease = kv.grant_lease(1)
    created = put(kv, b"/exp/host", b"alive", lease.id)
    stream = kv.watch(b"/exp/", created + 1)
    try:
        wait_for(lambda: kv.get(b"/exp/host") is None, "the lease to expire")
        batch = next_events(stream)
        assert [(e.type, e.kv.key) for e in batch.events] == [(EventType.DELETE, b"/exp/host")]
    finally:
        stream.cancel()


# -- watch -------------------------------------------------------------------------------------


def test_watch_from_an_old_revision_replays_history(kv: KV) -> None:
    start = put(kv, b"/w/a", b"1")
    kv.txn([], [Put(b"/w/b", b"2"), Put(b"/w/a", b"3")])
    put(kv, b"/other", b"not watched")
    kv.txn([], [Delete(b"/w/a")])
    stream = kv.watch(b"/w/", start, prev_kv=True)
    try:
        # A catching-up watcher may get several revisions per batch: collect until all arrived.
        events: list[WatchEvent] = []
        while len(events) < 4:
            batch = next_events(stream)
            assert batch.revision == batch.events[-1].kv.mod_revision
            events += batch.events
    finally:
        stream.cancel()
    assert [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events] == [
        (EventType.PUT, b"/w/a", b"1", start),
        (EventType.PUT, b"/w/b", b"2", start + 1),
        (EventType.PUT, b"/w/a", b"3", start + 1),
        (EventType.DELETE, b"/w/a", b"", start + 3),
    ]
    assert events[3].prev_kv is not None
    assert events[3].prev_kv.value == b"3"


def test_watch_from_now_sees_only_new_events(kv: KV) -> None:
    put(kv, b"/n/old", b"1")
    stream = kv.watch(b"/n/", 0)
    try:
        revision = put(kv, b"/n/new", b"2")
        batch = next_events(stream)
    finally:
        stream.cancel()
    assert [e.kv.key for e in batch.events] == [b"/n/new"]
    assert batch.revision == revision
    assert batch.events[0].prev_kv is None


def test_watch_below_compaction_raises_compacted(kv: KV) -> None:
    start = put(kv, b"/wc", b"1")
    put(kv, b"/wc", b"2")
    latest = put(kv, b"/wc", b"3")
    kv.compact(latest)
    stream = kv.watch(b"/wc", start)
    with pytest.raises(KVCompactedError) as caught:
        next_events(stream)
    assert caught.value.compact_revision == latest


def test_progress_notifications_arrive(kv: KV) -> None:
    revision = put(kv, b"/pg", b"1")
    stream = kv.watch(b"/pg", revision + 1)
    try:
        stream.request_progress()
        batch = next(iter(stream))
    finally:
        stream.cancel()
    assert batch.events == ()
    assert batch.progress
    assert batch.revision >= revision


def test_periodic_progress_without_asking(kv: KV) -> None:
    revision = put(kv, b"/pp", b"1")
    stream = kv.watch(b"/pp/", revision + 1)
    try:
        batches = iter(stream)
        first, second = next(batches), next(batches)
    finally:
        stream.cancel()
    assert first.progress
    assert second.progress
    assert second.revision >= revision


def test_cancel_from_another_thread_ends_the_iteration(kv: KV) -> None:
    stream = kv.watch(b"/cancel/", 0)
    received: list[WatchBatch] = []
    done = threading.Event()

    def consume() -> None:
        received.extend(batch for batch in stream if batch.events)
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    put(kv, b"/cancel/a", b"1")
    wait_for(lambda: bool(received), "the first event")
    stream.cancel()
    assert done.wait(PATIENCE_SECONDS)
    put(kv, b"/cancel/b", b"2")
    thread.join(PATIENCE_SECONDS)
    assert [e.kv.key for b in received for e in b.events] == [b"/cancel/a"]


def test_a_broken_watch_stream_raises_unavailable(kv: KV) -> None:
    stream = kv.watch(b"/broken/", 0)
    put(kv, b"/broken/a", b"1")
    batches = iter(stream)
    assert next_events(batches).events[0].kv.key == b"/broken/a"
    stream.break_stream()  # type: ignore[attr-defined]
    with pytest.raises(KVUnavailableError):
        for _ in batches:
            pass


def test_closed_store_is_unavailable(kv: KV) -> None:
    kv.close()
    with pytest.raises(KVUnavailableError):
        kv.get(b"/k")
    with pytest.raises(KVUnavailableError):
        kv.txn([], [Put(b"/k", b"v")])
