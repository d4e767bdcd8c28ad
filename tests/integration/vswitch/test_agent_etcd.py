"""The vswitch agent against a real etcd: recovery from an etcd crash and restart, compaction while the
agent's watch is down, an agent restart, and an agent process that stops promptly whether etcd is up,
hung or gone. Convergence is polled with generous bounds."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from overland.v1 import types_pb2
from services.common.config import EtcdConfig
from services.common.etcd_auth import ROOT_USER, host_user
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess, free_ports
from services.common.etcd_watch import EtcdWatch
from services.common.kv import KVUnavailableError
from services.common.schema import key_of, keys
from services.vswitch.agent import Agent
from services.vswitch.config import AgentConfig, BackoffPolicy
from services.vswitch.snapshot import TableSnapshots
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS
from tests.unit.vswitch.agent_helpers import RecordingDatapath, delete, put, seed, started_agent, wait_until
from tests.unit.vswitch.table_factory import record

pytestmark = pytest.mark.etcd


class GatedEtcdKV(EtcdKV):
    """An EtcdKV whose watches can be refused, to hold the agent's watch down while the store changes."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.watch_refused = threading.Event()

    def watch(self, prefix: bytes, start_revision: int, **options: Any) -> EtcdWatch:
        if self.watch_refused.is_set():
            raise KVUnavailableError("watch refused by the test")
        return super().watch(prefix, start_revision, **options)


def _config(host: str = "host-1") -> AgentConfig:
    return AgentConfig(
        host_name=host,
        pa_ip="198.18.0.1",
        table_only=True,
        page_size=50,
        lease_ttl=4,
        status_interval=0.05,
        etcd=EtcdConfig(timeout=ETCD_TEST_DEADLINE_SECONDS),
        backoff=BackoffPolicy(initial_seconds=0.05, cap_seconds=0.5),
    )


def _records(start: int, count: int) -> list[types_pb2.StoreEntry]:
    return [record(4096, "rd-blue", f"192.0.2.{i}", "198.18.0.2") for i in range(start, start + count)]


@pytest.fixture
def kv(etcd_server: EtcdProcess) -> Iterator[GatedEtcdKV]:
    # Root: the test writes the table through the agent's own client.
    store = GatedEtcdKV.from_config(etcd_server.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS))
    seed(store, *_records(1, 120))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def synced(kv: GatedEtcdKV) -> Iterator[tuple[Agent, RecordingDatapath]]:
    """A running agent that has applied the seeded table and whose watches are up."""
    datapath = RecordingDatapath()
    with started_agent(Agent(_config(), kv, datapath)) as agent:
        assert agent.wait_for_revision(kv.current_revision(), 20)
        wait_until(lambda: agent.watcher.connected, what="connected")
        yield agent, datapath


def _store_keys(kv: EtcdKV) -> set[bytes]:
    return {item.key for prefix in (keys.PA_PREFIX, keys.TABLE_PREFIX) for item in kv.range(prefix).kvs}


def _host_status(kv: EtcdKV, host: str) -> types_pb2.HostStatus | None:
    stored = kv.get(keys.host_key(host))
    return None if stored is None else types_pb2.StoreEntry.FromString(stored.value).host_status


def test_agent_recovers_from_an_etcd_crash_without_a_resync(
    etcd_server: EtcdProcess, kv: GatedEtcdKV, synced: tuple[Agent, RecordingDatapath]
) -> None:
    agent, datapath = synced
    assert agent.table.count("record") == 120
    etcd_server.kill()
    wait_until(lambda: not agent.watcher.connected, what="watch lost")
    # etcd is gone: the table stays as it was.
    assert agent.table.count("record") == 120
    etcd_server.start()
    revision = put(kv, *_records(200, 3))
    revision = max(revision, delete(kv, *_records(1, 2)))
    assert agent.wait_for_revision(revision, 30)
    assert set(agent.table.entries()) == _store_keys(kv)
    assert agent.watcher.stats.syncs == 1
    assert agent.watcher.stats.resets_after_compaction == 0
    assert agent.watcher.stats.stream_breaks >= 1
    assert not any(d.reset for d in datapath.deltas[1:])
    wait_until(lambda: agent.watcher.connected, what="connected again")
    # The host key comes back on a live lease and reports the applied revision.
    wait_until(
        lambda: (status := _host_status(kv, "host-1")) is not None and status.applied_revision >= revision,
        timeout=30,
        what="host status after the restart",
    )


def test_compaction_while_the_watch_is_down_relists_and_deletes_what_vanished(
    etcd_server: EtcdProcess, kv: GatedEtcdKV, synced: tuple[Agent, RecordingDatapath]
) -> None:
    agent, datapath = synced
    before = len(datapath.deltas)
    kv.watch_refused.set()
    etcd_server.kill()
    wait_until(lambda: not agent.watcher.connected, what="watch lost")
    etcd_server.start()
    vanished = _records(1, 10)
    delete(kv, *vanished)
    added = _records(150, 2)
    revision = put(kv, *added)
    kv.compact(revision)
    kv.watch_refused.clear()
    wait_until(lambda: agent.watcher.stats.resets_after_compaction >= 1, timeout=30, what="re-list")
    assert agent.wait_for_revision(revision, 30)
    assert set(agent.table.entries()) == _store_keys(kv)
    changes = [c for d in datapath.deltas[before:] for c in d.changes]
    # Only the difference reached the datapath: the vanished records as deletes, the new ones as adds.
    assert {c.key for c in changes if c.removed} == {key_of(e) for e in vanished}
    assert {c.key for c in changes if c.added} == {key_of(e) for e in added}
    assert not [c for c in changes if c.changed]


def test_agent_restart_after_deletes_and_compaction(kv: GatedEtcdKV) -> None:
    first = Agent(_config(), kv)
    first.start()
    assert first.wait_for_revision(kv.current_revision(), 20)
    applied = first.applied_revision
    first.stop()
    assert kv.get(keys.host_key("host-1")) is None
    delete(kv, *_records(1, 30))
    revision = put(kv, *_records(130, 1))
    kv.compact(revision)
    second = Agent(_config(), kv)
    second.start()
    try:
        assert second.wait_for_revision(revision, 20)
        assert second.applied_revision >= applied
        assert second.table.count("record") == 91
        assert set(second.table.entries()) == _store_keys(kv)
        wait_until(
            lambda: (
                (status := _host_status(kv, "host-1")) is not None and status.applied_revision >= revision
            ),
            what="host status",
        )
        later = put(kv, *_records(131, 1))
        assert second.wait_for_revision(later, 20)
        assert second.table.record(4096, "192.0.2.131") is not None
    finally:
        second.stop()


def test_a_hung_etcd_is_noticed_and_the_table_kept(etcd_server: EtcdProcess) -> None:
    config = replace(_config(), progress_every=0.3, watch_idle_timeout=1.5)
    # The agent's own client, as create_server builds it: a watch silent past the idle timeout counts
    # as broken (the client's gRPC keepalive may notice first).
    agent_kv = EtcdKV.from_config(
        etcd_server.etcd_config(
            host_user(config.host_name),
            timeout=ETCD_TEST_DEADLINE_SECONDS,
            watch_idle_timeout=config.watch_idle_timeout,
        )
    )
    writer = EtcdKV.from_config(etcd_server.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS))
    seed(writer, *_records(1, 5))
    try:
        with started_agent(Agent(config, agent_kv)) as agent:
            assert agent.wait_for_revision(writer.current_revision(), 20)
            wait_until(lambda: agent.watcher.connected, what="connected")
            etcd_server.pause()
            try:
                # SIGSTOP: no error, no close, just silence.
                wait_until(lambda: not agent.watcher.connected, timeout=30, what="silence noticed")
                assert agent.table.count("record") == 5
            finally:
                etcd_server.resume()
            revision = put(writer, *_records(10, 1))
            assert agent.wait_for_revision(revision, 30)
            assert agent.table.count("record") == 6
            assert agent.watcher.stats.syncs == 1
    finally:
        writer.close()
        agent_kv.close()


# What the test allows a stopping agent process: it stops within 1 s (STOP_SECONDS of waiting on etcd,
# then its exit; the measured time is in bench.agent_stop), and this bound leaves room for a loaded
# machine without letting the old 10 s through.
_STOP_BOUND_SECONDS = 3.0


def start_agent_process(
    etcd: EtcdProcess, tmp_path: Path, host: str = "host-stop"
) -> subprocess.Popen[bytes]:
    """``python -m services.vswitch``, table-only, saving its table to ``tmp_path/agent.table``; it logs
    to ``tmp_path/agent.log``."""
    (port,) = free_ports(1)
    with (tmp_path / "agent.log").open("wb") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.vswitch",
                *("--host-name", host, "--pa-ip", "198.18.0.1", "--table-only"),
                *("--bind", f"127.0.0.1:{port}", *etcd.flags(host_user(host))),
                *("--table-snapshot", str(tmp_path / "agent.table")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


@pytest.mark.parametrize("outage", ["none", "etcd paused", "etcd killed"])
def test_the_agent_process_stops_promptly_and_saves_its_table_whatever_etcd_does(
    etcd_server: EtcdProcess, tmp_path: Path, outage: str
) -> None:
    writer = EtcdKV.from_config(etcd_server.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS))
    seed(writer, *_records(1, 20))
    revision = writer.current_revision()
    process = start_agent_process(etcd_server, tmp_path)
    log_text = (tmp_path / "agent.log").read_text
    try:
        # Registered with the seeded table applied.
        wait_until(
            lambda: (
                (status := _host_status(writer, "host-stop")) is not None
                and status.applied_revision >= revision
            ),
            timeout=30,
            what=f"the agent process registered: {log_text()}",
        )
        if outage == "etcd paused":
            etcd_server.pause()
        elif outage == "etcd killed":
            etcd_server.kill()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(_STOP_BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {_STOP_BOUND_SECONDS} s after SIGTERM: {log_text()}"
            ) from None
        assert code == 0, log_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if outage == "etcd paused":
            etcd_server.resume()
        elif outage == "etcd killed":
            etcd_server.start()
    try:
        # The table was saved on the way out, etcd or not.
        saved = TableSnapshots(tmp_path / "agent.table").load()
        assert saved is not None
        saved_revision, entries = saved
        assert saved_revision >= revision
        assert sum(1 for entry in entries.values() if entry.HasField("lookup_record")) == 20
        if outage == "none":
            # A clean stop with etcd up revokes the lease: the host key went with the agent.
            assert _host_status(writer, "host-stop") is None
        else:
            # Without etcd the revoke gave up; the key expires at its lease's TTL instead.
            assert "host lease not revoked" in log_text()
    finally:
        writer.close()
