"""Benchmark: unary latency of the policy service with no open watch streams (the baseline) and with 64.

A fresh etcd and the policy service as its own process (``python -m services.policy``, one worker, its
defaults). Each round times ``--calls`` GetRoutingDomain calls, one after another from one client, with
no stream open; then opens 64 WatchTable streams, each on its own connection as 64 watching clients
would, waits until every one has delivered a change (so each holds its place in the service), times
the same calls again, and closes the streams. Health checks are timed the same way. A call that takes
longer than ``--call-timeout`` counts as frozen.

``--service-root DIR`` runs the service from another checkout (the same bench against the code before a
change: a before/after comparison on the same machine and minutes).

Run: ``.venv/bin/python -m bench.policy_streams [--rounds 3] [--calls 2000] [--streams 64]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from overland.v1 import policy_pb2, policy_pb2_grpc
from services.common.etcd_process import EtcdProcess, free_ports


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    frozen: int
    calls: int

    def __str__(self) -> str:
        if self.frozen == self.calls:
            return f"{'frozen':>9s} {'':>9s}"
        text = f"{self.p50_ms:7.2f}ms {self.p99_ms:7.2f}ms"
        return text + (f"  ({self.frozen} of {self.calls} frozen)" if self.frozen else "")


def time_calls(call: Callable[[], Any], calls: int, timeout: float) -> Latency:
    """``calls`` calls one after another; a call past ``timeout`` counts as frozen (and ends the run:
    the next ones would wait the same)."""
    seconds: list[float] = []
    frozen = 0
    for _ in range(calls):
        start = time.perf_counter()
        try:
            call()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            frozen = calls - len(seconds)
            break
        seconds.append(time.perf_counter() - start)
    if not seconds:
        return Latency(0.0, 0.0, frozen, calls)
    seconds.sort()
    return Latency(
        1000 * seconds[len(seconds) // 2],
        1000 * seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))],
        frozen,
        calls,
    )


def start_service(etcd: EtcdProcess, port: int, log: Path, root: Path | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "sdk" / "src")])
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.policy", "--bind", f"127.0.0.1:{port}", "--etcd", etcd.endpoint],
            stdout=subprocess.DEVNULL,
            stderr=out,
            cwd=root,
            env=env,
        )


def wait_serving(target: str, service: subprocess.Popen[bytes], log: Path) -> None:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if service.poll() is not None:
                raise SystemExit(f"the policy service exited: {log.read_text()}")
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.RpcError:
                time.sleep(0.2)
    raise SystemExit(f"the policy service did not serve in 60 s: {log.read_text()}")


class Streams:
    """``count`` WatchTable streams, each on its own connection, open at the service (``open`` of them
    within ``wait`` seconds: against a service whose streams starve it, the rest never start)."""

    def __init__(self, target: str, stub: Any, count: int, wait: float) -> None:
        after = stub.CreateRoutingDomain(
            policy_pb2.CreateRoutingDomainRequest(routing_domain={"tenant_name": "before-streams"}),
            timeout=10,
        ).revision
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [grpc.insecure_channel(target, options=options) for _ in range(count)]
        request = policy_pb2.WatchTableRequest(start_revision=after)
        self.calls = [
            policy_pb2_grpc.PolicyServiceStub(c).WatchTable(request, timeout=3600) for c in self.channels
        ]
        # Each stream delivers this change once it is open at the service.
        with contextlib.suppress(grpc.RpcError):
            stub.CreateRoutingDomain(
                policy_pb2.CreateRoutingDomainRequest(routing_domain={"tenant_name": "streams-open"}),
                timeout=wait,
            )
        delivered = [threading.Event() for _ in self.calls]
        for call, done in zip(self.calls, delivered, strict=True):
            threading.Thread(target=self._first_change, args=(call, done), daemon=True).start()
        deadline = time.monotonic() + wait
        self.open = sum(done.wait(max(deadline - time.monotonic(), 0)) for done in delivered)

    @staticmethod
    def _first_change(call: Any, done: threading.Event) -> None:
        with contextlib.suppress(grpc.RpcError, StopIteration):
            next(r for r in call if r.events)
            done.set()

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def run(args: argparse.Namespace) -> dict[str, list[Latency]]:
    results: dict[str, list[Latency]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-policy-streams-") as tmp:
        etcd = EtcdProcess(Path(tmp) / "etcd").start()
        (port,) = free_ports(1)
        target = f"127.0.0.1:{port}"
        log = Path(tmp) / "policy.log"
        service = start_service(etcd, port, log, args.service_root)
        try:
            wait_serving(target, service, log)
            with grpc.insecure_channel(target) as channel:
                stub = policy_pb2_grpc.PolicyServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                rdid = stub.CreateRoutingDomain(
                    policy_pb2.CreateRoutingDomainRequest(routing_domain={"tenant_name": "bench"}), timeout=10
                ).rdid
                get = policy_pb2.GetRoutingDomainRequest(rdid=rdid)
                check = health_pb2.HealthCheckRequest(service="overland.v1.PolicyService")
                timed = {
                    "GetRoutingDomain": lambda: stub.GetRoutingDomain(get, timeout=args.call_timeout),
                    "Health.Check": lambda: health.Check(check, timeout=args.call_timeout),
                }
                time_calls(timed["GetRoutingDomain"], 200, args.call_timeout)  # warm-up
                for _ in range(args.rounds):
                    for name, call in timed.items():
                        results.setdefault(f"{name}, no stream", []).append(
                            time_calls(call, args.calls, args.call_timeout)
                        )
                    streams = Streams(target, stub, args.streams, wait=30)
                    try:
                        label = f"{args.streams} streams" + (
                            "" if streams.open == args.streams else f" ({streams.open} open in 30 s)"
                        )
                        for name, call in timed.items():
                            results.setdefault(f"{name}, {label}", []).append(
                                time_calls(call, args.calls, args.call_timeout)
                            )
                    finally:
                        streams.close()
        finally:
            service.kill()
            service.wait()
            etcd.close()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--call-timeout", type=float, default=5.0)
    parser.add_argument("--service-root", type=Path, default=None, help="run the service from this checkout")
    args = parser.parse_args(argv)
    results = run(args)
    where = f" (service from {args.service_root})" if args.service_root else ""
    print(f"policy service{where}: {args.calls} unary calls one after another, {args.rounds} rounds")
    print(f"  {'':44s} {'p50':>9s} {'p99':>9s}   p99 of each round")
    for label, rounds in results.items():
        median = Latency(
            statistics.median(r.p50_ms for r in rounds),
            statistics.median(r.p99_ms for r in rounds),
            max(r.frozen for r in rounds),
            rounds[0].calls,
        )
        each = ", ".join("frozen" if r.frozen == r.calls else f"{r.p99_ms:.2f}" for r in rounds)
        print(f"  {label:44s} {median}   {each}")


if __name__ == "__main__":
    main()
