"""The agent's saved table: the file codec (round trips, garbage refused as SnapshotError only) and a
restart that forwards on the saved table before etcd answers, then gets only the difference."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from services.common.kv import EventType, KeyValue, WatchEvent
from services.common.schema import StoreEntry, key_of
from services.common.table import RoutingTable
from services.vswitch.agent import Agent
from services.vswitch.config import AgentConfig
from services.vswitch.snapshot import SnapshotError, TableSnapshots, decode_table, encode_table
from tests.unit.vswitch.agent_helpers import (
    FAST_BACKOFF,
    GatedKV,
    RecordingDatapath,
    put,
    seed,
    started_agent,
    wait_until,
)
from tests.unit.vswitch.table_factory import record

CAS = st.integers(1, 254).map(lambda host: f"192.0.2.{host}")
PAS = st.sampled_from(["198.18.0.1", "198.18.0.2", "198.18.0.3"])
RECORDS = st.lists(st.tuples(CAS, PAS), unique_by=lambda pair: pair[0], max_size=30).map(
    lambda pairs: [record(4096, "rd-blue", ca, pa) for ca, pa in pairs]
)


def _encoded(entries: list[StoreEntry]) -> dict[bytes, bytes]:
    return {key_of(entry): entry.SerializeToString() for entry in entries}


@given(RECORDS, st.integers(0, 2**63))
def test_a_snapshot_round_trips(entries: list[StoreEntry], revision: int) -> None:
    decoded_revision, decoded = decode_table(encode_table(revision, _encoded(entries)))
    assert decoded_revision == revision
    assert decoded == {key_of(entry): entry for entry in entries}


@given(RECORDS.filter(bool), st.data())
def test_a_cut_or_extended_snapshot_is_refused(entries: list[StoreEntry], data: st.DataObject) -> None:
    whole = encode_table(7, _encoded(entries))
    cut = data.draw(st.integers(0, len(whole) - 1))
    for damaged in (whole[:cut], whole + b"\0"):
        try:
            decode_table(damaged)
        except SnapshotError:
            continue
        raise AssertionError(f"accepted a damaged snapshot ({len(damaged)} of {len(whole)} bytes)")


@given(st.binary(max_size=200))
def test_garbage_raises_only_snapshot_error(data: bytes) -> None:
    with contextlib.suppress(SnapshotError):
        decode_table(data)


def test_a_corrupt_file_loads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "table"
    path.write_bytes(b"OVTABLE1 but not really")
    assert TableSnapshots(path).load() is None
    assert TableSnapshots(tmp_path / "absent").load() is None


def test_saves_are_atomic_and_follow_the_table(tmp_path: Path) -> None:
    snapshots = TableSnapshots(tmp_path / "state" / "host.table")
    table = RoutingTable()
    first = record(4096, "rd-blue", "192.0.2.1", "198.18.0.1")
    table.reset({key_of(first): first}, 5)
    snapshots.save(table.revision, dict(table.entries()))
    moved = record(4096, "rd-blue", "192.0.2.1", "198.18.0.2")
    second = record(4096, "rd-blue", "192.0.2.2", "198.18.0.2")
    table.update(
        [
            WatchEvent(EventType.PUT, KeyValue(key_of(moved), moved.SerializeToString(), 5, 6, 2)),
            WatchEvent(EventType.PUT, KeyValue(key_of(second), second.SerializeToString(), 7, 7, 1)),
        ]
    )
    snapshots.save(table.revision, dict(table.entries()))
    assert [p.name for p in snapshots.path.parent.iterdir()] == ["host.table"]
    loaded = snapshots.load()
    assert loaded is not None
    revision, entries = loaded
    assert revision == 7
    assert entries == dict(table.entries())
    assert entries[key_of(moved)].lookup_record.pa == "198.18.0.2"


def _config(snapshot: Path) -> AgentConfig:
    return AgentConfig(
        host_name="host-1",
        pa_ip="198.18.0.1",
        backoff=FAST_BACKOFF,
        status_interval=0.05,
        table_snapshot=str(snapshot),
        snapshot_interval=0.05,
    )


def test_a_restarted_agent_forwards_on_its_saved_table_before_etcd_answers(tmp_path: Path) -> None:
    kv = GatedKV(progress_interval=0.05)
    seed(kv)
    kept = record(4096, "rd-blue", "192.0.2.1", "198.18.0.2")
    changed = record(4096, "rd-blue", "192.0.2.2", "198.18.0.2")
    revision = put(kv, kept, changed)
    path = tmp_path / "host-1.table"
    try:
        first = Agent(_config(path), kv, RecordingDatapath())
        with started_agent(first):
            assert first.wait_for_revision(revision, 10)
            # Saved while running (not only on stop): a crash keeps a recent table.
            wait_until(path.exists, what="a snapshot saved while running")
        # While the agent is down, one record moves; then etcd becomes unreachable.
        moved = record(4096, "rd-blue", "192.0.2.2", "198.18.0.3")
        put(kv, moved)
        kv.set_available(False)
        datapath = RecordingDatapath()
        second = Agent(_config(path), kv, datapath)
        with started_agent(second):
            # Forwarding resumed on the saved table with etcd still down.
            assert datapath.started
            assert len(datapath.deltas) == 1
            assert datapath.deltas[0].reset
            assert second.table.record(4096, "192.0.2.1") is not None
            assert second.applied_revision >= revision
            assert not second.watcher.synced
            kv.set_available(True)
            wait_until(lambda: second.watcher.synced, what="synced with etcd")
            # The sync handed the datapath only what changed while the agent was down: no flush.
            synced = [c for d in datapath.deltas[1:] for c in d.changes]
            assert [(c.key, c.after.lookup_record.pa if c.after else None) for c in synced] == [
                (key_of(moved), "198.18.0.3")
            ]
    finally:
        kv.close()


def test_an_agent_without_etcd_or_snapshot_saves_nothing(tmp_path: Path) -> None:
    kv = GatedKV()
    kv.set_available(False)
    path = tmp_path / "host-1.table"
    try:
        agent = Agent(_config(path), kv, RecordingDatapath())
        with started_agent(agent):
            assert not agent.save_snapshot()
        assert not path.exists()
    finally:
        kv.close()
