"""Benchmark: bulk load of lookup records through the policy API beside raw etcd transactions.

The API side starts a real etcd and the policy service as its own process (``python -m
services.policy --workers 2`` by default: two server processes sharing the port, since one Python
process runs on one core at a time), registers the tenants, then streams the records with
BulkApplyLookupRecords from several client threads. The baseline writes the same keys and values
(record + MAC index) straight to a fresh etcd of the same settings with ``EtcdKV.txn``, in
transactions of the same number of records the API used, from the same number of threads, with
every value encoded before the clock starts. Then both page through everything: ListLookupRecords
against raw ranges.

With ``--tracing`` each round also loads through a policy service with tracing on (spans to a
JSON-lines file through the batch processor, every stored entry carrying its writer's trace
context), beside the same service with tracing off, to show what tracing costs.

Run: ``.venv/bin/python -m bench.policy_bulk [--records N] [--clients N] [--workers N] [--tracing]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess, free_ports
from services.common.kv import Put
from services.common.schema import encode_entry, keys

# 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24, which every tenant reuses: each /24 but its network,
# gateway (.1) and broadcast addresses, which no VM may have.
CAS_PER_TENANT = 3 * 253
HOSTS = 16
FIRST_VSID = 5000
TARGET = 0.5


@dataclass(frozen=True)
class Tenant:
    rdid: str
    vsid: int


def ca_of(index: int) -> str:
    bases = ("192.0.2", "198.51.100", "203.0.113")
    return f"{bases[index // 253]}.{index % 253 + 2}"


def pa_of(index: int) -> str:
    return f"198.18.{index // 250}.{index % 250 + 1}"


def mac_of(tenant: int, index: int) -> str:
    return f"02:00:{tenant >> 8 & 0xFF:02x}:{tenant & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


def make_records(tenants: list[Tenant], total: int) -> list[types_pb2.LookupRecord]:
    records: list[types_pb2.LookupRecord] = []
    for number, tenant in enumerate(tenants):
        for index in range(min(CAS_PER_TENANT, total - len(records))):
            records.append(
                types_pb2.LookupRecord(
                    ca=ca_of(index),
                    vsid=tenant.vsid,
                    mac=mac_of(number, index),
                    pa=pa_of((number + index) % HOSTS),
                    vm_name=f"vm-{number}-{index}",
                )
            )
    return records


def wait_serving(channel: grpc.Channel, process: subprocess.Popen[bytes]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the policy service exited with {process.returncode}")
        try:
            answer = health.Check(
                health_pb2.HealthCheckRequest(service="overland.v1.PolicyService"), timeout=1
            )
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            time.sleep(0.2)
    raise SystemExit("the policy service did not become healthy in 30 s")


def run_threads(work: list[Callable[[], None]]) -> float:
    """Run each callable in its own thread; the wall time until all are done (errors re-raised)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        for future in [pool.submit(job) for job in work]:
            future.result()
    return time.perf_counter() - start


def seed(stub: policy_pb2_grpc.PolicyServiceStub, tenants_wanted: int) -> list[Tenant]:
    for index in range(HOSTS):
        stub.CreateProviderAddress(
            policy_pb2.CreateProviderAddressRequest(
                provider_address=types_pb2.ProviderAddress(
                    host_name=f"host{index}", pa_ip=pa_of(index), prefix_length=16
                )
            )
        )
    tenants = []
    for number in range(tenants_wanted):
        domain = stub.CreateRoutingDomain(
            policy_pb2.CreateRoutingDomainRequest(
                routing_domain=types_pb2.RoutingDomain(tenant_name=f"tenant-{number}")
            )
        )
        vsid = FIRST_VSID + number
        stub.CreateVirtualSubnet(
            policy_pb2.CreateVirtualSubnetRequest(
                virtual_subnet=types_pb2.VirtualSubnet(
                    vsid=vsid,
                    rdid=domain.rdid,
                    ca_prefixes=["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"],
                )
            )
        )
        tenants.append(Tenant(domain.rdid, vsid))
    return tenants


def load_through_api(
    port: int, records: list[types_pb2.LookupRecord], clients: int, chunk: int
) -> tuple[float, list[policy_pb2.BulkApplyLookupRecordsResponse]]:
    """Each client thread streams its share; the requests are built before the clock starts, as
    the baseline encodes its values beforehand."""
    results: list[policy_pb2.BulkApplyLookupRecordsResponse] = []

    def stream(share: list[types_pb2.LookupRecord]) -> Callable[[], None]:
        requests = [
            policy_pb2.BulkApplyLookupRecordsRequest(upserts=share[start : start + chunk])
            for start in range(0, len(share), chunk)
        ]

        def job() -> None:
            # Its own connection, as separate clients have (channels in one process share one by default).
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                client = policy_pb2_grpc.PolicyServiceStub(channel)
                results.append(client.BulkApplyLookupRecords(iter(requests), timeout=3600))

        return job

    jobs = [stream(records[i::clients]) for i in range(clients)]
    return run_threads(jobs), results


def list_through_api(stub: policy_pb2_grpc.PolicyServiceStub, page_size: int) -> tuple[float, int]:
    start = time.perf_counter()
    listed, token = 0, ""
    while True:
        page = stub.ListLookupRecords(
            policy_pb2.ListLookupRecordsRequest(
                page=types_pb2.PageRequest(page_size=page_size, page_token=token)
            ),
            timeout=600,
        )
        listed += len(page.lookup_records)
        token = page.next_page_token
        if not token:
            return time.perf_counter() - start, listed


@dataclass
class ApiRun:
    load_seconds: float
    applied: int
    transactions: int
    list_seconds: float
    listed: int


def service_env(span_file: Path | None) -> dict[str, str]:
    """The policy service's environment: traced into ``span_file``, or untraced whatever the caller's
    environment says."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OVERLAND_SPAN_FILE", "OTEL_EXPORTER_OTLP_ENDPOINT")
    }
    if span_file is not None:
        env["OVERLAND_SPAN_FILE"] = str(span_file)
    return env


def api_run(
    data: Path,
    total: int,
    clients: int,
    chunk: int,
    page_size: int,
    *,
    workers: int,
    span_file: Path | None = None,
) -> ApiRun:
    (port,) = free_ports(1)
    with EtcdProcess(data / "api-etcd") as etcd, (data / "policy.log").open("wb") as log_file:
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.policy",
                "--bind",
                f"127.0.0.1:{port}",
                "--etcd",
                etcd.endpoint,
                "--etcd-timeout",
                "30",
                "--log-level",
                "WARNING",
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=service_env(span_file),
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                wait_serving(channel, service)
                stub = policy_pb2_grpc.PolicyServiceStub(channel)
                tenants = seed(stub, math.ceil(total / CAS_PER_TENANT))
                records = make_records(tenants, total)
                load, results = load_through_api(port, records, clients, chunk)
                list_seconds, listed = list_through_api(stub, page_size)
        finally:
            service.terminate()
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(5)
    return ApiRun(
        load,
        sum(r.applied for r in results),
        sum(r.transactions for r in results),
        list_seconds,
        listed,
    )


@dataclass
class RawRun:
    load_seconds: float
    transactions: int
    list_seconds: float
    listed: int


def raw_run(data: Path, total: int, clients: int, per_txn: int, page_size: int) -> RawRun:
    """The same key-values straight into etcd: per record its record key and MAC index key."""
    tenants = [Tenant(str(uuid.uuid4()), FIRST_VSID + n) for n in range(math.ceil(total / CAS_PER_TENANT))]
    records = make_records(tenants, total)
    rdid_of = {t.vsid: t.rdid for t in tenants}
    now = time.time_ns()
    pairs = []
    for rec in records:
        rec.rdid = rdid_of[rec.vsid]
        rec.rule = types_pb2.LOOKUP_RULE_ENCAP
        rec.type = types_pb2.LOOKUP_TYPE_STATIC
        pairs.append(
            [
                Put(keys.record_key(rec.rdid, rec.vsid, rec.ca), encode_entry(rec, now)),
                Put(keys.mac_index_key(rec.vsid, rec.mac), rec.ca.encode()),
            ]
        )
    shares = [pairs[i::clients] for i in range(clients)]
    counts = [0] * clients
    with EtcdProcess(data / "raw-etcd") as etcd:
        kv = EtcdKV(etcd.endpoint, timeout=30)
        try:

            def writer(number: int) -> Callable[[], None]:
                def job() -> None:
                    share = shares[number]
                    for start in range(0, len(share), per_txn):
                        kv.txn([], [op for pair in share[start : start + per_txn] for op in pair])
                        counts[number] += 1

                return job

            load = run_threads([writer(n) for n in range(clients)])
            start = time.perf_counter()
            listed, cursor, revision = 0, None, 0
            while True:
                page = kv.range(keys.TABLE_PREFIX, start=cursor, limit=page_size, revision=revision)
                revision = revision or page.revision
                listed += len(page.kvs)
                if not page.more:
                    break
                cursor = page.kvs[-1].key + b"\0"
            list_seconds = time.perf_counter() - start
        finally:
            kv.close()
    return RawRun(load, sum(counts), list_seconds, listed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=1000, help="records per stream message")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--workers", type=int, default=2, help="policy server processes sharing the port (--workers)"
    )
    parser.add_argument("--tracing", action="store_true", help="also load with tracing on, beside off")
    args = parser.parse_args()
    api_runs: list[ApiRun] = []
    raw_runs: list[RawRun] = []
    traced_runs: list[tuple[ApiRun, int]] = []
    per_txn = 0
    # Each round runs both sides back to back (fresh etcd each time), in alternating order, and the
    # ratio is taken within the round: the speed of this shared machine drifts by half from one
    # minute to the next, so rates from different rounds do not compare.
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="overland-bench-") as tmp:

            def api_side(tmp: str = tmp) -> ApiRun:
                run = api_run(
                    Path(tmp), args.records, args.clients, args.chunk, args.page_size, workers=args.workers
                )
                if run.applied != args.records or run.listed != args.records:
                    raise SystemExit(f"API run incomplete: applied {run.applied}, listed {run.listed}")
                return run

            if round_no % 2 == 0 or not per_txn:
                api = api_side()
                per_txn = per_txn or round(api.applied / api.transactions)
                raw = raw_run(Path(tmp), args.records, args.clients, per_txn, args.page_size)
            else:
                raw = raw_run(Path(tmp), args.records, args.clients, per_txn, args.page_size)
                api = api_side()
            if args.tracing:
                # Its own etcd data directory: the untraced run's etcd still holds the records.
                traced_dir = Path(tmp) / "traced"
                traced_dir.mkdir()
                spans = traced_dir / "spans.jsonl"
                traced = api_run(
                    traced_dir,
                    args.records,
                    args.clients,
                    args.chunk,
                    args.page_size,
                    workers=args.workers,
                    span_file=spans,
                )
                traced_runs.append((traced, len(spans.read_text().splitlines())))
        api_rate, raw_rate = api.applied / api.load_seconds, args.records / raw.load_seconds
        print(
            f"  round {round_no + 1}: API {api_rate:.0f} records/s, raw {raw_rate:.0f} records/s: "
            f"{api_rate / raw_rate:.0%}",
            flush=True,
        )
        api_runs.append(api)
        raw_runs.append(raw)
    load_ratios = [raw.load_seconds / api.load_seconds for api, raw in zip(api_runs, raw_runs, strict=True)]
    list_ratios = [raw.list_seconds / api.list_seconds for api, raw in zip(api_runs, raw_runs, strict=True)]
    api_load = statistics.median(run.load_seconds for run in api_runs)
    raw_load = statistics.median(run.load_seconds for run in raw_runs)
    print(
        f"policy bulk load: {args.records} lookup records, {args.clients} client threads, "
        f"{per_txn} records per transaction, {args.workers} policy worker process(es), "
        f"fresh etcd each time, medians of {args.rounds} rounds"
    )
    _row("", "records/s", "seconds", "txns")
    _row(
        "baseline: raw etcd txns (record + MAC index)",
        f"{args.records / raw_load:.0f}",
        f"{raw_load:.2f}",
        raw_runs[0].transactions,
    )
    _row(
        "BulkApplyLookupRecords (policy service)",
        f"{args.records / api_load:.0f}",
        f"{api_load:.2f}",
        api_runs[0].transactions,
    )
    ratio = statistics.median(load_ratios)
    print(
        f"  API / raw: {ratio:.0%} (median of the rounds' ratios, {_span(load_ratios)}; "
        f"target >= {TARGET:.0%}: {'met' if ratio >= TARGET else 'MISSED'})"
    )
    print(f"paged list of all {args.records}, {args.page_size} per page")
    raw_list = statistics.median(run.list_seconds for run in raw_runs)
    api_list = statistics.median(run.list_seconds for run in api_runs)
    _row("baseline: raw etcd range pages", f"{args.records / raw_list:.0f}", f"{raw_list:.2f}", "")
    _row("ListLookupRecords (policy service)", f"{args.records / api_list:.0f}", f"{api_list:.2f}", "")
    print(f"  API / raw: {statistics.median(list_ratios):.0%} (median, {_span(list_ratios)})")
    if traced_runs:
        print_tracing(api_runs, traced_runs, args.records)


def _span(ratios: list[float]) -> str:
    return f"rounds {min(ratios):.0%}-{max(ratios):.0%}"


def print_tracing(api_runs: list[ApiRun], traced_runs: list[tuple[ApiRun, int]], records: int) -> None:
    """Tracing on beside off (the untraced API runs of the same rounds are the baseline)."""
    spans = statistics.median(count for _run, count in traced_runs)
    print(f"tracing overhead (batch span processor, JSON-lines span file; median {spans:.0f} spans per run)")
    off_load = statistics.median(run.load_seconds for run in api_runs)
    on_load = statistics.median(run.load_seconds for run, _spans in traced_runs)
    _row("baseline: tracing off, bulk load", f"{records / off_load:.0f}", f"{off_load:.2f}", "")
    _row("tracing on, bulk load", f"{records / on_load:.0f}", f"{on_load:.2f}", "")
    print(f"  load: on / off {off_load / on_load:.0%} of the rate")
    off_list = statistics.median(run.list_seconds for run in api_runs)
    on_list = statistics.median(run.list_seconds for run, _spans in traced_runs)
    _row("baseline: tracing off, paged list", f"{records / off_list:.0f}", f"{off_list:.2f}", "")
    _row("tracing on, paged list", f"{records / on_list:.0f}", f"{on_list:.2f}", "")
    print(f"  list: on / off {off_list / on_list:.0%} of the rate")


def _row(label: str, rate: str, seconds: str, txns: object) -> None:
    print(f"  {label:<46} {rate:>10} {seconds:>8} {txns!s:>6}")


if __name__ == "__main__":
    main()
