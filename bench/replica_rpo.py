"""Benchmark: is the RPO held at a 30 s frequency under a steady 20 MB/s of writes?

A writer issues random 64 KiB writes through the tracked device at 20 MB/s while the scheduler runs
30-second cycles to a DR process. Reported: how many cycles met the RPO (finished within their
interval, Hyper-V's "not missed"), the replica's worst age (now minus the cut time of the newest
recovery point, sampled every second), and the replication throughput beside the write rate (the
baseline: replication must keep up with it).

Run: ``.venv/bin/python -m bench.replica_rpo [--cycles 4] [--rate-mb 20] [--gib 4]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench.replica_common import GIB, MIB, enable, replicate_now, same, sites, wait_replicating
from overland.v1 import replica_pb2
from services.replica.primary.chunking import TokenBucket
from services.replica.vhd import create_dynamic

BLOCK = 64 * 1024
FREQUENCY = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--rate-mb", type=float, default=20.0, help="write rate in MB/s (10^6 bytes)")
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer threads (queue depth)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="replica-rpo-", dir=args.dir))
    try:
        run(workdir, int(args.gib * GIB) // BLOCK * BLOCK, args.rate_mb * 1e6, args.cycles, args.writers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(workdir: Path, size: int, rate: float, cycles: int, writers: int) -> None:
    disk = workdir / "source.vhd"
    create_dynamic(disk, size)
    with sites(workdir) as (primary, endpoint):
        stub = enable(primary, "vm1", disk, endpoint, frequency_seconds=FREQUENCY)
        wait_replicating(stub, "vm1")
        assert primary.manager is not None
        device = primary.manager.device("vm1", "d0")
        stop = threading.Event()
        written = [0]

        bucket = TokenBucket(rate, BLOCK * 16)
        bucket_lock = threading.Lock()
        count_lock = threading.Lock()

        def writer(seed: int) -> None:
            # Several writers, as a guest's queue depth: each new block waits for the tracking log's
            # fsync, and concurrent writers share it (group commit).
            rng = random.Random(seed)
            payload = os.urandom(BLOCK * 16)
            while not stop.is_set():
                with bucket_lock:
                    wait = bucket.take(BLOCK, time.monotonic())
                if wait:
                    time.sleep(wait)
                start = rng.randrange(0, BLOCK * 15)
                device.write(rng.randrange(size // BLOCK) * BLOCK, payload[start : start + BLOCK])
                with count_lock:
                    written[0] += BLOCK

        threads = [threading.Thread(target=writer, args=(seed,), daemon=True) for seed in range(writers)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        base = stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1")).statistics.total_cycles
        worst_age = 0.0
        try:
            while True:
                time.sleep(1.0)
                replication = stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))
                points = stub.ListRecoveryPoints(replica_pb2.ListRecoveryPointsRequest(vm_name="vm1"))
                newest = max(p.create_time_unix_nanos for p in points.recovery_points)
                worst_age = max(worst_age, (time.time_ns() - newest) / 1e9)
                if replication.statistics.total_cycles - base >= cycles:
                    break
                if time.monotonic() - began > (cycles + 3) * FREQUENCY * 2:
                    raise RuntimeError("cycles did not complete in time")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        elapsed = time.monotonic() - began
        stats = replication.statistics
        ran = stats.total_cycles - base
        missed = stats.missed_cycles
        replicate_now(primary, "vm1")
        identical = same(disk, workdir / "dr-store" / "vm1" / "disks" / "d0.vhd")
    write_rate = written[0] / elapsed / 1e6
    shipped = stats.average_delta_bytes / 1e6
    print(f"RPO at a {FREQUENCY} s frequency under steady random 64 KiB writes, {size / GIB:.0f} GiB disk")
    print(
        f"  writes (baseline: offered {rate / 1e6:.0f} MB/s)  achieved {write_rate:.1f} MB/s, {elapsed:.0f} s"
    )
    cycle_seconds = stats.average_latency_seconds
    print(
        f"  replication  {shipped / max(cycle_seconds, 1e-9):6.1f} MB/s while cycling"
        f" (average delta {shipped:.0f} MB, average cycle {cycle_seconds:.1f} s)"
    )
    print(f"  cycles that met the RPO: {ran - missed} of {ran} (missed {missed})")
    print(f"  worst replica age {worst_age:.1f} s (RPO {FREQUENCY} s + one cycle); identical: {identical}")
    print(f"  ({MIB} bytes per MiB; MB = 10^6 bytes)")


if __name__ == "__main__":
    main()
