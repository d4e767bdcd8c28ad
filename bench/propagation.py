"""Benchmark: propagation of policy writes to 20 vswitch agents, beside bare etcd watchers in the same run.

Setup: one real etcd, the real policy service (``python -m services.policy``, its own process), a
routing domain with a subnet and lookup records. Load: ``UpdateLookupRecord`` calls at a paced 500
writes/s, each moving a record to the other PA (what a live migration does). Every write carries the
policy service's wall clock (``StoreEntry.write_time_unix_nanos``).

- Agents: 20 table-only ``Agent`` processes (each its own interpreter, as on 20 hosts). Each agent's
  apply callback records ``now - write_time`` for every record change it applies: the write is
  "applied on every agent" when the slowest of the 20 has applied it.
- Baseline: 20 processes with a bare ``EtcdKV.watch`` on the table prefix that only decode the
  StoreEntry and record the same latency: etcd plus the watch transport, without the agent.

The two phases run one after the other against the same etcd and policy service, with the same load.
Run: ``.venv/bin/python -m bench.propagation [--agents 20] [--rate 500] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.config import EtcdConfig
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.common.schema import StoreEntry, keys
from services.common.table import RoutingTable, TableDelta
from services.vswitch.agent import Agent
from services.vswitch.config import AgentConfig

PAS = ("198.18.0.1", "198.18.0.2")
VSID = 5001
CA_BLOCKS = ("192.0.2", "198.51.100", "203.0.113")
WRITER_THREADS = 8
PROGRESS_NOTIFY_SECONDS = 0.5
# How long a phase waits for every watcher to apply the last write.
DRAIN_SECONDS = 60.0
READY_SECONDS = 120.0


@dataclass(frozen=True)
class Phase:
    """What the parent tells each watcher process."""

    kind: str  # "agent" or "bare"
    index: int
    etcd: str
    status_interval: float


def _record_latencies(entries: list[StoreEntry], since_ns: int, out: list[tuple[int, int]]) -> None:
    now = time.time_ns()
    for entry in entries:
        written = entry.write_time_unix_nanos
        if written >= since_ns and entry.HasField("lookup_record"):
            out.append((written, now - written))


def _watch_process(phase: Phase, conn: Connection) -> None:
    """A watcher process: report ready, measure until told the last revision, send the latencies back."""
    latencies: list[tuple[int, int]] = []
    since_ns = int(conn.recv())
    kv = EtcdKV(phase.etcd, timeout=10.0)
    applied = threading.Condition()
    state = {"revision": 0}
    stop = threading.Event()

    def note(revision: int) -> None:
        with applied:
            state["revision"] = max(state["revision"], revision)
            applied.notify_all()

    agent = None
    if phase.kind == "agent":

        def on_apply(table: RoutingTable, delta: TableDelta) -> None:
            _record_latencies([c.after for c in delta.changes if c.after is not None], since_ns, latencies)
            note(table.revision)

        config = AgentConfig(
            host_name=f"bench-host-{phase.index}",
            pa_ip=f"198.18.1.{phase.index + 1}",
            table_only=True,
            etcd=EtcdConfig(endpoints=(phase.etcd,)),
            status_interval=phase.status_interval,
        )
        agent = Agent(config, kv, on_apply=on_apply)
        agent.start()
    else:

        def bare() -> None:
            stream = kv.watch(keys.TABLE_PREFIX, kv.current_revision() + 1)
            note(kv.current_revision())
            for batch in stream:
                if stop.is_set():
                    return
                entries = []
                for event in batch.events:
                    entry = StoreEntry()
                    entry.ParseFromString(event.kv.value)
                    entries.append(entry)
                _record_latencies(entries, since_ns, latencies)
                note(batch.revision)

        threading.Thread(target=bare, daemon=True).start()
    with applied:
        applied.wait_for(lambda: state["revision"] > 0, timeout=READY_SECONDS)
    conn.send("ready")
    cpu_before = time.process_time()
    last = int(conn.recv())
    with applied:
        caught_up = applied.wait_for(lambda: state["revision"] >= last, timeout=DRAIN_SECONDS)
    cpu_seconds = time.process_time() - cpu_before
    stop.set()
    if agent is not None:
        agent.stop()
    kv.close()
    conn.send((caught_up, latencies, cpu_seconds))


def _seed(policy: policy_pb2_grpc.PolicyServiceStub, records: int) -> list[types_pb2.LookupRecord]:
    domain = policy.CreateRoutingDomain(
        policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name="bench")),
        timeout=10,
    )
    for i, pa in enumerate(PAS):
        policy.CreateProviderAddress(
            policy_pb2.CreateProviderAddressRequest(
                provider_address=types_pb2.ProviderAddress(
                    host_name=f"pa-host-{i}", pa_ip=pa, prefix_length=16
                )
            ),
            timeout=10,
        )
    policy.CreateVirtualSubnet(
        policy_pb2.CreateVirtualSubnetRequest(
            virtual_subnet=types_pb2.VirtualSubnet(
                vsid=VSID, rdid=domain.rdid, ca_prefixes=[f"{block}.0/24" for block in CA_BLOCKS]
            )
        ),
        timeout=10,
    )
    cas = [f"{block}.{host}" for block in CA_BLOCKS for host in range(1, 255)][:records]
    created = []
    for n, ca in enumerate(cas):
        record = types_pb2.LookupRecord(
            ca=ca, vsid=VSID, mac=f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}", pa=PAS[0], vm_name=f"vm-{n}"
        )
        created.append(
            policy.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=record), timeout=10)
        )
    return created


def _write_load(
    policy: policy_pb2_grpc.PolicyServiceStub,
    records: list[types_pb2.LookupRecord],
    rate: float,
    seconds: float,
) -> tuple[int, float]:
    """Paced updates from several threads; returns (writes, seconds taken)."""
    total = int(rate * seconds)
    counter = iter(range(total))
    lock = threading.Lock()
    start = time.perf_counter()
    # Updates of one record must not race each other: each thread owns a slice of the records.
    owned = [records[t::WRITER_THREADS] for t in range(WRITER_THREADS)]

    def writer(mine: list[types_pb2.LookupRecord]) -> None:
        moves = 0
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            record = mine[moves % len(mine)]
            moves += 1
            # Move the VM to the other host, as a live migration does.
            record.pa = PAS[1] if record.pa == PAS[0] else PAS[0]
            policy.UpdateLookupRecord(policy_pb2.UpdateLookupRecordRequest(lookup_record=record), timeout=10)

    threads = [threading.Thread(target=writer, args=(owned[t],)) for t in range(WRITER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total, time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _run_phase(
    kind: str,
    *,
    count: int,
    etcd: EtcdKV,
    endpoint: str,
    load: Callable[[], tuple[int, float]],
    status_interval: float,
) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    pipes = []
    processes = []
    since_ns = time.time_ns()
    for index in range(count):
        parent, child = context.Pipe()
        process = context.Process(
            target=_watch_process, args=(Phase(kind, index, endpoint, status_interval), child), daemon=True
        )
        process.start()
        parent.send(since_ns)
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        if not pipe.poll(READY_SECONDS):
            raise RuntimeError(f"a {kind} watcher did not become ready")
        pipe.recv()
    writes, took = load()
    last = etcd.current_revision()
    for pipe in pipes:
        pipe.send(last)
    per_pair: list[float] = []
    slowest: dict[int, float] = {}
    lagging = 0
    cpu_total = 0.0
    for pipe in pipes:
        if not pipe.poll(DRAIN_SECONDS + 30):
            raise RuntimeError(f"a {kind} watcher did not report")
        caught_up, latencies, cpu_seconds = pipe.recv()
        lagging += not caught_up
        cpu_total += cpu_seconds
        for written, latency_ns in latencies:
            latency_ms = latency_ns / 1e6
            per_pair.append(latency_ms)
            slowest[written] = max(slowest.get(written, 0.0), latency_ms)
    for process in processes:
        process.join(30)
        if process.is_alive():
            process.kill()
    every = list(slowest.values())
    return {
        "writes": writes,
        "rate": writes / took,
        "pairs": len(per_pair),
        "p50": statistics.median(per_pair),
        "p99": _percentile(per_pair, 0.99),
        "all_p50": statistics.median(every),
        "all_p99": _percentile(every, 0.99),
        "all_max": max(every),
        "lagging": lagging,
        # CPU each watcher process spent per write it applied, while the load ran and drained.
        "cpu_us_per_write": 1e6 * cpu_total / max(len(per_pair), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument(
        "--status-interval", type=float, default=1.0, help="the agents' host-status rate limit"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        # etcd 3.5.1 answers a watch's progress request with a stale revision; its periodic progress
        # notifications (default every 10 minutes) are what moves an idle stream's applied revision.
        EtcdProcess(Path(tmp) / "etcd", watch_progress_notify_interval=PROGRESS_NOTIFY_SECONDS) as server,
        (Path(tmp) / "policy.log").open("wb") as policy_log,
    ):
        policy_port = _free_port()
        policy_process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.policy",
                "--bind",
                f"127.0.0.1:{policy_port}",
                "--etcd",
                server.endpoint,
            ],
            stdout=subprocess.DEVNULL,
            stderr=policy_log,
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{policy_port}")
        etcd = EtcdKV(server.endpoint, timeout=10.0)
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True
            )
            policy = policy_pb2_grpc.PolicyServiceStub(channel)
            records = _seed(policy, args.records)

            def load() -> tuple[int, float]:
                return _write_load(policy, records, args.rate, args.seconds)

            agents, bare = (
                _run_phase(
                    kind,
                    count=args.agents,
                    etcd=etcd,
                    endpoint=server.endpoint,
                    load=load,
                    status_interval=args.status_interval,
                )
                for kind in ("agent", "bare")
            )
        finally:
            etcd.close()
            channel.close()
            policy_process.terminate()
            policy_process.wait(30)
    load1, _, _ = os.getloadavg()
    print(
        f"propagation: policy UpdateLookupRecord at {args.rate:.0f}/s for {args.seconds:.0f}s, "
        f"{args.agents} watchers, {os.cpu_count()} CPUs, load average {load1:.1f}"
    )
    print("  (ms from the policy service's write time to applied; 'every' = the slowest of the watchers)")
    for label, figures in (("baseline bare etcd watch", bare), ("table-only agents", agents)):
        print(
            f"  {label:<25} achieved {figures['rate']:5.0f} writes/s  "
            f"each p50 {figures['p50']:6.1f} p99 {figures['p99']:7.1f}   "
            f"every p50 {figures['all_p50']:6.1f} p99 {figures['all_p99']:7.1f} max {figures['all_max']:7.1f}"
            f"   CPU/write/watcher {figures['cpu_us_per_write']:5.0f} us"
            f"   ({figures['pairs']} samples, {figures['lagging']:.0f} not caught up)"
        )
    print("  target: every-agent p99 < 100 ms")


if __name__ == "__main__":
    main()
