"""Benchmark: how long a vswitch agent process takes to stop on SIGTERM, with etcd up (the baseline),
hung (SIGSTOP) and gone (killed).

Each round starts a fresh etcd and a table-only agent process (``python -m services.vswitch``, its
table saved to a snapshot file), waits until the agent has registered with the seeded table applied,
puts etcd in the round's state, sends SIGTERM and times until the process has exited. The agent waits
on etcd for at most ``STOP_SECONDS`` (services/vswitch/agent.py) plus a revoke of at least 0.1 s;
before that bound it waited out each etcd call's 5 s deadline (5 s hung, 9 s gone).

Run: ``.venv/bin/python -m bench.agent_stop [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from overland.v1 import types_pb2
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess, free_ports
from services.common.kv import Put
from services.common.schema import key_of, keys, wrap

STATES = ("etcd up", "etcd hung (SIGSTOP)", "etcd gone (killed)")
HOST = "bench-stop"


def _seed(kv: EtcdKV, records: int) -> int:
    """A provider address, a routing domain, a subnet and ``records`` lookup records; the revision."""
    entries = [
        wrap(types_pb2.ProviderAddress(host_name="bench-peer", pa_ip="198.18.0.2", prefix_length=16)),
        wrap(types_pb2.RoutingDomain(rdid="rd-bench", tenant_name="bench")),
        wrap(types_pb2.VirtualSubnet(vsid=5001, rdid="rd-bench", ca_prefixes=["192.0.2.0/24"])),
    ]
    entries += [
        wrap(
            types_pb2.LookupRecord(
                vsid=5001,
                rdid="rd-bench",
                ca=f"192.0.2.{n + 1}",
                pa="198.18.0.2",
                mac=f"02:00:00:00:00:{n + 1:02x}",
            )
        )
        for n in range(records)
    ]
    return kv.txn([], [Put(key_of(entry), entry.SerializeToString()) for entry in entries]).revision


def _registered(kv: EtcdKV, revision: int) -> bool:
    stored = kv.get(keys.host_key(HOST))
    if stored is None:
        return False
    return types_pb2.StoreEntry.FromString(stored.value).host_status.applied_revision >= revision


def measure(state: str, workdir: Path) -> float:
    """Seconds from SIGTERM to the agent process's exit, with etcd in ``state``."""
    etcd = EtcdProcess(workdir / "etcd", unsafe_no_fsync=True).start()
    kv = EtcdKV([etcd.endpoint], timeout=5)
    try:
        revision = _seed(kv, 50)
        (port,) = free_ports(1)
        log_path = workdir / "agent.log"
        with log_path.open("wb") as log_file:
            agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.vswitch",
                    *("--host-name", HOST, "--pa-ip", "198.18.0.1", "--table-only"),
                    *("--bind", f"127.0.0.1:{port}", "--etcd", etcd.endpoint),
                    *("--table-snapshot", str(workdir / "agent.table")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        deadline = time.monotonic() + 60
        while not _registered(kv, revision):
            if time.monotonic() > deadline or agent.poll() is not None:
                agent.kill()
                raise SystemExit(f"the agent did not register: {log_path.read_text()}")
            time.sleep(0.05)
        # Past registration the agent is in its steady state (idle watch, lease keepalive).
        time.sleep(0.5)
        if state == STATES[1]:
            etcd.pause()
        elif state == STATES[2]:
            etcd.kill()
        start = time.perf_counter()
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(60)
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"the agent exited with {code}: {log_path.read_text()}")
        if state == STATES[1]:
            etcd.resume()
        return seconds
    finally:
        kv.close()
        etcd.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {state: [] for state in STATES}
    for _ in range(args.rounds):
        for state in STATES:
            with tempfile.TemporaryDirectory(prefix="bench-agent-stop-") as tmp:
                times[state].append(measure(state, Path(tmp)))
    print(f"vswitch agent process, SIGTERM to exit, {args.rounds} rounds (table-only, 50 records)")
    print(f"  {'etcd':24s} {'median':>8s} {'max':>8s}")
    for state in STATES:
        print(f"  {state:24s} {statistics.median(times[state]):7.2f}s {max(times[state]):7.2f}s")


if __name__ == "__main__":
    main()
