"""The policy service as a process on a real etcd under long-lived streams: 64 open watches leave health
and unary calls answering, and watchers that stop reading cost it no memory while 20,000 writes go by,
then get every change exactly once when they read again (the SDK resuming by itself)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from overland import ClientConfig, Endpoint, PolicyClient, Service
from overland.defaults import RESUME_REVISION, WATCH_BACKLOG_EXCEEDED
from overland.v1 import policy_pb2, policy_pb2_grpc
from services.common.etcd_auth import ROOT_USER
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess, free_ports
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS
from tests.integration.policy.processes import start_policy, wait_logged, wait_serving
from tests.unit.policy.support import WatchStarts, write_records

pytestmark = pytest.mark.etcd

WRITES = 20_000
WRITERS = 4
MIB = 1024 * 1024


@dataclass
class Policy:
    process: subprocess.Popen[bytes]
    target: str
    log_path: Path


@pytest.fixture
def policy_process(etcd_server: EtcdProcess, tmp_path: Path) -> Iterator[Callable[..., Policy]]:
    """Starts ``python -m services.policy FLAGS...`` on ``etcd_server``, serving; killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> Policy:
        (port,) = free_ports(1)
        log_path = tmp_path / "policy.log"
        process = start_policy(etcd_server, port, log_path, *flags)
        started.append(process)
        wait_serving(f"127.0.0.1:{port}", log_path)
        wait_logged(log_path, "policy service listening")
        return Policy(process, f"127.0.0.1:{port}", log_path)

    try:
        yield start
    finally:
        for process in started:
            process.kill()
            process.wait(10)


def rss_bytes(pid: int) -> int:
    """The resident set of process ``pid``, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_64_open_watches_leave_health_and_unary_calls_answering(
    policy_process: Callable[..., Policy],
) -> None:
    policy = policy_process()
    with grpc.insecure_channel(policy.target) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        domain = stub.CreateRoutingDomain(
            policy_pb2.CreateRoutingDomainRequest(routing_domain={"tenant_name": "streams"}), timeout=10
        )
        after = policy_pb2.WatchTableRequest(start_revision=domain.revision)
        watches = [stub.WatchTable(after, timeout=120) for _ in range(64)]
        try:
            # Every watch is open at the service: a write reaches each of them.
            stub.CreateRoutingDomain(
                policy_pb2.CreateRoutingDomainRequest(routing_domain={"tenant_name": "seen"}), timeout=10
            )
            for watch in watches:
                response = next(r for r in watch if r.events)
                assert response.events[0].entry.routing_domain.tenant_name == "seen"
            # Before stream slots, 32 of them took every server thread and these waited forever.
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(20):
                status = health.Check(
                    health_pb2.HealthCheckRequest(service="overland.v1.PolicyService"), timeout=10
                )
                assert status.status == health_pb2.HealthCheckResponse.SERVING
                got = stub.GetRoutingDomain(policy_pb2.GetRoutingDomainRequest(rdid=domain.rdid), timeout=10)
                assert got.tenant_name == "streams"
        finally:
            for watch in watches:
                watch.cancel()


def _write_in_parallel(etcd: EtcdProcess, count: int, writers: int) -> list[int]:
    """``count`` record writes, one per transaction, from ``writers`` threads with their own etcd
    clients; every write's revision."""
    revisions: list[list[int]] = [[] for _ in range(writers)]

    def write(index: int) -> None:
        with EtcdKV.from_config(etcd.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS)) as kv:
            share = count // writers
            revisions[index] = write_records(kv, share, batch=1, first=index * share)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(r for part in revisions for r in part)


def _drain(watch: Any) -> tuple[list[int], grpc.RpcError]:
    """The revisions a stream still delivers, and the error that ends it."""
    received: list[int] = []
    try:
        for response in watch:
            received += [event.revision for event in response.events]
    except grpc.RpcError as error:
        return received, error
    raise AssertionError(f"the stream ended without an error after {len(received)} events")


def _resume_revision(error: grpc.RpcError) -> int:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.reason == WATCH_BACKLOG_EXCEEDED:
            return int(info.metadata[RESUME_REVISION])
    raise AssertionError(f"no resume revision in {error}")


def test_stalled_watchers_cost_no_memory_and_resume_exactly(
    etcd_server: EtcdProcess, policy_process: Callable[..., Policy]
) -> None:
    policy = policy_process("--watch-backlog-mib", "1", "--watch-stall-seconds", "1")
    with EtcdKV.from_config(etcd_server.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS)) as kv:
        start = kv.current_revision()
    # Without BDP probing a client that does not read takes in 64 KiB, not the many MiB that the
    # probing would grow its window to on loopback: it is stalled at the transport, not only above it.
    channel = grpc.insecure_channel(policy.target, options=[("grpc.http2.bdp_probe", 0)])
    counter = WatchStarts()
    sdk = PolicyClient(
        config=ClientConfig(endpoints={Service.POLICY: Endpoint(policy.target)}),
        channel=grpc.intercept_channel(channel, counter),
    )
    try:
        # Four watchers that read nothing from here on: three raw gRPC streams and one SDK watch.
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        stalled = [stub.WatchTable(policy_pb2.WatchTableRequest(start_revision=start)) for _ in range(3)]
        sdk_watch = sdk.watch_table(start_revision=start)
        warm_up = _write_in_parallel(etcd_server, 400, WRITERS)
        seen = [event.revision for event in next(sdk_watch).events]
        assert seen == warm_up[: len(seen)]
        rss = [rss_bytes(policy.process.pid)]
        written: list[int] = []
        for _ in range(8):
            written += _write_in_parallel(etcd_server, WRITES // 8, WRITERS)
            rss.append(rss_bytes(policy.process.pid))
        # Without the bound, each watcher held every write since it stopped reading (about 200 MiB
        # for the four of them by the end); with it, at most 1 MiB each at any time.
        growth = [round((sample - rss[0]) / MIB, 1) for sample in rss]
        assert max(growth) < 4 * 1 + 8, f"RSS growth in MiB at each eighth of the writes: {growth}"
        for watch in stalled:
            received, ended = _drain(watch)
            assert ended.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _resume_revision(ended) == (received[-1] if received else start)
        # The SDK's watch resumes by itself: every write, each once, in order.
        while len(seen) < len(warm_up) + len(written):
            seen += [event.revision for event in next(sdk_watch).events]
        assert seen == warm_up + written
        assert len(counter.starts) >= 2
    finally:
        sdk.close()
        channel.close()
    assert "a watcher stopped reading" in policy.log_path.read_text()
