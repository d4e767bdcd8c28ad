"""Benchmark: how long the ``overland`` CLI takes to start, beside a bare ``python -c pass``.

Each command is a fresh process of the same interpreter, and they run in turn (interleaved, so that
the load of this shared machine falls on all alike): ``python -c pass`` (the baseline),
``overland --help``, and ``overland policy routing-domain list`` against a real policy service (its own
process) on a real etcd holding a few routing domains, as a table and with ``--json`` (no rich). Each
prints its median wall time and range, and its median beside the baseline's. Targets: ``--help``
within 0.2 s of the baseline, the (table) list call within 0.3 s.

The SDK is measured as pip installs it, with its bytecode compiled: the untimed first round writes
the ``__pycache__`` of an editable checkout even where ``PYTHONDONTWRITEBYTECODE`` is set (otherwise
every run would compile the SDK's sources again, which no installed copy does).

Run: ``.venv/bin/python -m bench.cli_startup [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.policy_bulk import wait_serving
from overland import PolicyClient
from services.common.etcd_process import EtcdProcess, free_ports

OVERLAND = Path(sys.executable).with_name("overland")
DOMAINS = 5
# Targets: how much later than a bare interpreter each command may finish.
TARGETS = {"overland --help": 0.2, "overland policy routing-domain list": 0.3}


def _time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def measure(address: str, runs: int) -> dict[str, list[float]]:
    """Wall seconds of each command, ``runs`` times, in turn."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OVERLAND_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["OVERLAND_POLICY_ENDPOINT"] = address
    listing = [str(OVERLAND), "policy", "routing-domain", "list"]
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "overland --help": [str(OVERLAND), "--help"],
        "overland policy routing-domain list": listing,
        "overland --json policy routing-domain list": [listing[0], "--json", *listing[1:]],
    }
    # One untimed round first: the first start of each reads its files from disk.
    for command in commands.values():
        _time(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(_time(command, env))
    return times


def report(times: dict[str, list[float]], runs: int) -> None:
    baseline = statistics.median(next(iter(times.values())))
    print(f"CLI start, wall time of a fresh process, median of {runs} runs (range)")
    print(f"  {'command':<44} {'median s':>9} {'range s':>13} {'beyond baseline':>16}")
    for name, samples in times.items():
        median = statistics.median(samples)
        spread = f"{min(samples):.3f}-{max(samples):.3f}"
        extra = "" if name.endswith("(baseline)") else f"+{median - baseline:.3f} s"
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else f" (target +{target} s: {'met' if median - baseline <= target else 'MISSED'})"
        )
        print(f"  {name:<44} {median:>9.3f} {spread:>13} {extra:>16}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory(prefix="overland-bench-") as tmp,
        EtcdProcess(Path(tmp) / "etcd") as etcd,
    ):
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.policy",
                "--bind",
                address,
                "--etcd",
                etcd.endpoint,
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with grpc.insecure_channel(address) as channel:
                wait_serving(channel, service)
            with PolicyClient(address) as policy:
                for number in range(DOMAINS):
                    policy.create_routing_domain(tenant_name=f"tenant-{number}")
            times = measure(address, args.runs)
        finally:
            service.terminate()
            service.wait(20)
    report(times, args.runs)


if __name__ == "__main__":
    main()
