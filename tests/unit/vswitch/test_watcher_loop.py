"""The agent's watch loop and host registration on MemoryKV, with broken streams, a lost etcd and
compaction injected."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import types_pb2
from services.common.clock import ManualClock
from services.common.config import ConfigError, EtcdConfig
from services.common.kv import KVUnavailableError, Put, RangeResult
from services.common.memory_kv import MemoryKV
from services.common.schema import key_of, keys
from services.common.table import RoutingTable, TableDelta
from services.vswitch.agent import Agent, HostRegistration, status_due
from services.vswitch.config import AgentConfig, BackoffPolicy
from services.vswitch.watcher import TableWatcher, WatchCursors, watch_prefixes
from tests.unit.vswitch.agent_helpers import (
    FAST_BACKOFF,
    GatedKV,
    RecordingDatapath,
    delete,
    put,
    seed,
    started_agent,
    wait_until,
)
from tests.unit.vswitch.table_factory import domain, provider, record, subnet


def _config(**overrides: object) -> AgentConfig:
    settings: dict[str, object] = {
        "host_name": "host-1",
        "pa_ip": "198.18.0.1",
        "table_only": True,
        "backoff": FAST_BACKOFF,
        "page_size": 3,
        "status_interval": 0.05,
    }
    settings.update(overrides)
    return AgentConfig(**settings)  # type: ignore[arg-type]


def _records(count: int, pa: str = "198.18.0.2", vsid: int = 4096) -> list[types_pb2.StoreEntry]:
    return [record(vsid, "rd-blue", f"192.0.2.{i + 1}", pa) for i in range(count)]


@pytest.fixture
def kv() -> Iterator[GatedKV]:
    store = GatedKV(progress_interval=0.05)
    seed(store)
    try:
        yield store
    finally:
        store.close()


Running = tuple[Agent, RecordingDatapath]


@pytest.fixture
def agent(kv: GatedKV) -> Iterator[Running]:
    datapath = RecordingDatapath()
    with started_agent(Agent(_config(), kv, datapath)) as started:
        yield started, datapath


def test_cold_sync_reads_pages_at_one_revision(kv: GatedKV) -> None:
    put(kv, *_records(10))
    revision = kv.current_revision()
    late = record(4096, "rd-blue", "192.0.2.200", "198.18.0.2")
    original_range = kv.range

    def range_then_write(prefix: bytes, **options: object) -> RangeResult:
        result = original_range(prefix, **options)
        if len(kv.range_calls) == 2:
            # A write between two pages must not show up in a read pinned to the first page's revision.
            put(kv, late)
        return result

    kv.range = range_then_write  # type: ignore[method-assign]
    table = RoutingTable()
    deltas: list[TableDelta] = []
    watcher = TableWatcher(kv, watch_prefixes(), table, lambda _t, d: deltas.append(d), page_size=3)
    watcher.sync()
    assert table.revision == revision
    assert table.count("record") == 10
    assert table.record(4096, "192.0.2.200") is None
    assert table.count("pa") == 2
    # 2 PAs in one page; domain + subnet + 10 records in 4 full pages; every page after the first pinned.
    assert kv.range_calls == [0, revision, revision, revision, revision]
    assert deltas[-1].reset
    assert len(deltas[-1].added("record")) == 10


def test_agent_follows_puts_and_deletes_and_feeds_the_datapath(agent: Running, kv: GatedKV) -> None:
    running, datapath = agent
    wait_until(lambda: running.watcher.connected, what="connected")
    assert datapath.started
    first, second = _records(2)
    revision = put(kv, first, second)
    assert running.wait_for_revision(revision, 10)
    assert running.table.record(4096, "192.0.2.1") is not None
    revision = delete(kv, first)
    assert running.wait_for_revision(revision, 10)
    assert running.table.record(4096, "192.0.2.1") is None
    assert key_of(first) in datapath.removed_keys()
    status = running.status()
    assert status.lookup_records == 1
    assert status.applied_revision >= revision
    assert status.connected


def test_applied_revision_follows_progress_of_other_prefixes(agent: Running, kv: GatedKV) -> None:
    running, _ = agent
    wait_until(lambda: running.watcher.connected, what="connected")
    # A write outside the watched prefixes: no event, but progress moves the applied revision.
    revision = int(kv.txn([], [Put(keys.vsid_index_key(4096), b"rd-blue")]).revision)
    assert running.wait_for_revision(revision, 10)


def test_broken_streams_resume_without_resync(agent: Running, kv: GatedKV) -> None:
    running, datapath = agent
    wait_until(lambda: running.watcher.connected, what="connected")
    syncs = running.watcher.stats.syncs
    kv.watch_refused.set()
    kv.break_watches()
    wait_until(lambda: not running.watcher.connected, what="disconnected")
    revision = put(kv, *_records(3))
    kv.watch_refused.clear()
    assert running.wait_for_revision(revision, 10)
    assert running.table.count("record") == 3
    assert running.watcher.stats.syncs == syncs
    assert running.watcher.stats.stream_breaks >= 1
    assert not any(d.reset for d in datapath.deltas[1:])


def test_lost_etcd_keeps_the_table_and_recovers(agent: Running, kv: GatedKV) -> None:
    running, datapath = agent
    revision = put(kv, *_records(4))
    assert running.wait_for_revision(revision, 10)
    applied = len(datapath.deltas)
    kv.set_available(False)
    wait_until(lambda: not running.watcher.connected, what="disconnected")
    assert running.table.count("record") == 4
    assert running.status().lookup_records == 4
    kv.set_available(True)
    revision = delete(kv, *_records(1))
    assert running.wait_for_revision(revision, 10)
    assert running.table.count("record") == 3
    assert running.watcher.stats.syncs == 1
    # Only the delete reached the datapath after the outage: no flush, no re-add.
    later = [c for d in datapath.deltas[applied:] for c in d.changes]
    assert [(c.removed, c.key) for c in later] == [(True, key_of(_records(1)[0]))]


def test_compaction_while_disconnected_relists_and_synthesizes_deletes(agent: Running, kv: GatedKV) -> None:
    running, datapath = agent
    kept, gone = (
        record(4096, "rd-blue", "192.0.2.10", "198.18.0.2"),
        record(4096, "rd-blue", "192.0.2.11", "198.18.0.2"),
    )
    revision = put(kv, kept, gone)
    assert running.wait_for_revision(revision, 10)
    before = len(datapath.deltas)
    kv.watch_refused.set()
    kv.break_watches()
    wait_until(lambda: not running.watcher.connected, what="disconnected")
    delete(kv, gone)
    added = record(4096, "rd-blue", "192.0.2.12", "198.18.0.2")
    revision = put(kv, added)
    kv.compact(revision)
    kv.watch_refused.clear()
    wait_until(lambda: running.watcher.stats.resets_after_compaction == 1, what="re-list")
    assert running.wait_for_revision(revision, 10)
    assert running.table.record(4096, "192.0.2.11") is None
    assert running.table.record(4096, "192.0.2.12") is not None
    after = [c for d in datapath.deltas[before:] for c in d.changes]
    assert sorted((c.key, c.removed) for c in after) == sorted([(key_of(gone), True), (key_of(added), False)])
    wait_until(lambda: running.watcher.connected, what="connected again")


def test_restarted_agent_resumes_from_the_store(kv: GatedKV) -> None:
    first = Agent(_config(), kv)
    first.start()
    revision = put(kv, *_records(5))
    assert first.wait_for_revision(revision, 10)
    first.stop()
    revision = delete(kv, *_records(2))
    second = Agent(_config(), kv)
    second.start()
    try:
        assert second.wait_for_revision(revision, 10)
        assert second.table.count("record") == 3
        assert dict(second.table.entries()).keys() == {
            kv_.key for kv_ in kv.range(keys.PA_PREFIX).kvs + kv.range(keys.TABLE_PREFIX).kvs
        }
    finally:
        second.stop()


def test_serving_some_routing_domains_only(kv: GatedKV) -> None:
    put(
        kv,
        domain("rd-red"),
        subnet(4098, "rd-red", "192.0.2.0/24"),
        record(4098, "rd-red", "192.0.2.1", "198.18.0.1"),
    )
    put(kv, *_records(2))
    running = Agent(_config(rdids=("rd-red",)), kv)
    running.start()
    try:
        assert running.wait_for_revision(kv.current_revision(), 10)
        assert running.table.count("record") == 1
        assert running.table.count("pa") == 2
        assert running.table.subnets_of("rd-blue") == []
    finally:
        running.stop()


def test_a_datapath_bug_stops_the_agent_loudly(kv: GatedKV) -> None:
    datapath = RecordingDatapath()
    failures: list[BaseException] = []
    running = Agent(_config(), kv, datapath, on_failure=failures.append)
    running.start()
    try:
        wait_until(lambda: running.watcher.connected, what="connected")
        datapath.fail_with = RuntimeError("bug in the datapath")
        put(kv, *_records(1))
        wait_until(lambda: bool(failures), what="failure reported")
        assert isinstance(running.failure, RuntimeError)
    finally:
        running.stop()


def test_host_key_is_registered_on_a_lease_with_the_applied_revision(agent: Running, kv: GatedKV) -> None:
    running, _ = agent
    revision = put(kv, *_records(2))
    assert running.wait_for_revision(revision, 10)

    def published() -> int:
        stored = kv.get(keys.host_key("host-1"))
        if stored is None:
            return -1
        entry = types_pb2.StoreEntry.FromString(stored.value)
        return int(entry.host_status.applied_revision)

    wait_until(lambda: published() >= revision, what="status published")
    stored = kv.get(keys.host_key("host-1"))
    assert stored is not None
    assert stored.lease != 0
    status = types_pb2.StoreEntry.FromString(stored.value).host_status
    assert (status.host_name, status.pa_ip) == ("host-1", "198.18.0.1")
    assert status.applied_time_unix_nanos > 0
    running.stop()
    # Stopping revokes the lease: the host key goes at once.
    assert kv.get(keys.host_key("host-1")) is None


def test_registration_comes_back_after_the_lease_is_lost() -> None:
    clock = ManualClock()
    kv = MemoryKV(clock=clock)
    config = _config(lease_ttl=3)
    registration = HostRegistration(kv, config, lambda: (5, 1, 5))
    stop = threading.Event()
    thread = threading.Thread(target=registration.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: kv.get(keys.host_key("host-1")) is not None, what="registered")
        clock.advance(10)
        kv.expire_leases()
        assert kv.get(keys.host_key("host-1")) is None
        # The keepalive (every TTL/3 = 1 s) finds the lease gone and registers again.
        wait_until(lambda: kv.get(keys.host_key("host-1")) is not None, what="registered again")
        assert registration.registered
    finally:
        stop.set()
        registration.notify()
        thread.join(5)
        kv.close()


def test_status_writes_follow_table_changes_rate_limited() -> None:
    def due(published: int, applied: int, changed: int, last_time: float = 9.7) -> tuple[bool, float]:
        return status_due(
            now=10.0, last_time=last_time, published=published, applied=applied, changed=changed, interval=0.2
        )

    # A change not yet published: publish, unless the last write was too recent.
    assert due(published=5, applied=6, changed=6) == (True, 0.0)
    assert due(published=5, applied=6, changed=6, last_time=9.9)[0] is False
    assert due(published=5, applied=6, changed=6, last_time=9.9)[1] == pytest.approx(0.1)
    # Progress past the newest change (writes outside the table) is no reason to write.
    assert due(published=6, applied=9, changed=6) == (False, 0.0)
    # Published below the change (a stream was behind) and the applied revision moved on: again.
    assert due(published=5, applied=7, changed=6) == (True, 0.0)
    assert due(published=5, applied=5, changed=6) == (False, 0.0)


def test_idle_agents_do_not_write_status_for_each_others_writes(kv: GatedKV) -> None:
    agents = [Agent(_config(host_name=f"host-{i}", progress_every=0.05), kv) for i in range(3)]
    for agent in agents:
        agent.start()
    try:
        wait_until(lambda: all(a.registration.registered for a in agents), what="registered")
        revision = put(kv, *_records(1))
        wait_until(lambda: all(a.applied_revision >= revision for a in agents), what="applied")
        time.sleep(0.5)
        writes = [a.registration.writes for a in agents]
        settled = kv.current_revision()
        time.sleep(1.0)
        # Every agent sees the others' status writes through progress; none of them writes again.
        assert [a.registration.writes for a in agents] == writes
        assert kv.current_revision() == settled
    finally:
        for agent in agents:
            agent.stop()


def test_agent_registration_writes_stay_bounded_under_many_applies(agent: Running, kv: GatedKV) -> None:
    running, _ = agent
    wait_until(lambda: running.registration.registered, what="registered")
    writes = running.registration.writes
    for i in range(40):
        put(kv, record(4096, "rd-blue", f"192.0.2.{i + 1}", "198.18.0.2"))
    assert running.wait_for_revision(kv.current_revision(), 10)
    # 40 applied revisions, but status writes are limited to one per status_interval.
    assert running.registration.writes - writes < 40


def test_watch_prefixes_never_include_hosts_or_indexes() -> None:
    for prefixes in (watch_prefixes(), watch_prefixes(["rd-b", "rd-a", "rd-b"])):
        assert keys.PA_PREFIX in prefixes
        assert not any(p.startswith((keys.HOSTS_PREFIX, keys.ROOT + b"index/")) for p in prefixes)
    assert watch_prefixes(["rd-b", "rd-a", "rd-b"])[1:] == (
        keys.domain_prefix("rd-a"),
        keys.domain_prefix("rd-b"),
    )


def test_unavailable_store_at_start_is_retried(kv: GatedKV) -> None:
    kv.set_available(False)
    running = Agent(_config(), kv)
    running.start()
    try:
        wait_until(lambda: len(kv.range_calls) >= 3, what="retries")
        assert running.watcher.stats.syncs == 0
        assert not running.watcher.connected
        kv.set_available(True)
        assert running.wait_for_revision(kv.current_revision(), 10)
        assert running.table.count("pa") == 2
    finally:
        running.stop()


@given(st.integers(0, 200), st.floats(0, 0.999))
def test_backoff_grows_to_a_cap_with_bounded_jitter(attempt: int, unit: float) -> None:
    policy = BackoffPolicy(initial_seconds=0.1, cap_seconds=5.0, jitter=0.5)
    delay = policy.delay(attempt, unit)
    base = min(5.0, 0.1 * 2**attempt)
    assert base * 0.5 <= delay <= base
    assert delay <= 5.0


def test_cursors_report_the_lowest_stream() -> None:
    cursors = WatchCursors.at(10, 2)
    assert cursors.advance(1, 15) == 10
    assert cursors.lagging() == [0]
    assert cursors.advance(0, 20) == 15
    assert cursors.advance(0, 12) == 15
    assert cursors.lagging() == [1]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"host_name": ""}, "host_name"),
        ({"pa_ip": "198.18.0.300"}, "pa_ip"),
        ({"lease_ttl": 1}, "lease_ttl"),
        ({"page_size": 0}, "page_size"),
        ({"pa_mtu": 50}, "pa_mtu"),
        ({"rdids": ("a/b",)}, "rdids"),
        ({"etcd": EtcdConfig(endpoints=("nohost",))}, "etcd.endpoints"),
        ({"etcd": EtcdConfig(timeout=0)}, "etcd.timeout"),
        ({"backoff": BackoffPolicy(initial_seconds=0)}, "backoff.initial_seconds"),
    ],
)
def test_bad_config_is_refused_with_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _config(**overrides).validate()
    assert field in {v.field for v in raised.value.violations}


def test_unreadable_store_raises_unavailable() -> None:
    class Down(MemoryKV):
        def range(self, prefix: bytes, **options: object) -> RangeResult:
            raise KVUnavailableError("down")

    watcher = TableWatcher(Down(), watch_prefixes(), RoutingTable(), lambda _t, _d: None)
    with pytest.raises(KVUnavailableError):
        watcher.sync()


def test_idle_agent_catches_up_with_writes_it_does_not_watch() -> None:
    # No periodic progress from the store at all: the agent must ask for it.
    kv = MemoryKV(progress_interval=None)
    put(kv, provider("198.18.0.1"))
    running = Agent(_config(progress_every=0.05), kv)
    running.start()
    try:
        assert running.wait_for_revision(kv.current_revision(), 10)
        revision = int(kv.txn([], [Put(keys.vsid_index_key(4096), b"rd-blue")]).revision)
        assert running.wait_for_revision(revision, 10)
    finally:
        running.stop()
        kv.close()


def test_updates_hold_the_datapath_table_lock(kv: GatedKV) -> None:
    datapath = RecordingDatapath()
    held: list[bool] = []
    original_apply = datapath.apply

    def apply(table: RoutingTable, delta: TableDelta) -> None:
        # RLock._is_owned: whether the calling thread holds it.
        held.append(datapath.table_lock._is_owned())  # type: ignore[attr-defined]
        original_apply(table, delta)

    datapath.apply = apply  # type: ignore[method-assign]
    running = Agent(_config(), kv, datapath)
    assert running.lock is datapath.table_lock
    running.start()
    try:
        assert running.wait_for_revision(put(kv, *_records(1)), 10)
        assert held
        assert all(held)
    finally:
        running.stop()


def test_batches_queued_behind_a_slow_apply_arrive_as_one_change(kv: GatedKV) -> None:
    datapath = RecordingDatapath()
    gate = threading.Event()
    original_apply = datapath.apply

    def slow_apply(table: RoutingTable, delta: TableDelta) -> None:
        if delta.changes and not delta.reset:
            gate.wait(10)
        original_apply(table, delta)

    datapath.apply = slow_apply  # type: ignore[method-assign]
    running = Agent(_config(), kv, datapath)
    running.start()
    try:
        wait_until(lambda: running.watcher.connected, what="connected")
        revisions = [put(kv, entry) for entry in _records(12)]
        wait_until(lambda: running.watcher.stats.batches >= 1, what="first batch")
        gate.set()
        assert running.wait_for_revision(revisions[-1], 10)
        record_deltas = [d for d in datapath.deltas if d.added("record")]
        assert sum(len(d.added("record")) for d in record_deltas) == 12
        assert len(record_deltas) < 12
    finally:
        gate.set()
        running.stop()


def test_a_synced_empty_table_is_published() -> None:
    kv = MemoryKV()
    put(kv, record(4096, "rd-blue", "192.0.2.1", "198.18.0.1"))
    delete(kv, record(4096, "rd-blue", "192.0.2.1", "198.18.0.1"))
    with started_agent(Agent(_config(), kv)) as agent:
        wait_until(lambda: agent.applied_revision >= 3, what="synced")
        assert len(agent.table) == 0

        def published() -> int:
            stored = kv.get(keys.host_key("host-1"))
            return (
                -1
                if stored is None
                else types_pb2.StoreEntry.FromString(stored.value).host_status.applied_revision
            )

        wait_until(lambda: published() >= 3, what="the sync revision published")
    kv.close()
