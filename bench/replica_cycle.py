"""Benchmark: initial replication of a disk over loopback gRPC beside ``cp`` of the same file, then a
delta cycle at 1% churn beside ``rsync --inplace --no-whole-file`` bringing the old copy up to date.

Run: ``.venv/bin/python -m bench.replica_cycle [--gib 4] [--churn 0.01] [--dir DIR]``.
Targets (issue 4): initial >= 50% of cp; delta >= 20x faster than rsync.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from bench.replica_common import GIB, MIB, enable, fill_fixed_disk, same, sites, timed, wait_replicating
from overland.v1 import replica_pb2

BLOCK = 64 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    size = int(args.gib * GIB) // BLOCK * BLOCK
    workdir = Path(tempfile.mkdtemp(prefix="replica-bench-", dir=args.dir))
    try:
        run(workdir, size, args.churn)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(workdir: Path, size: int, churn: float) -> None:
    source = workdir / "source.vhd"
    fill_fixed_disk(source, size)
    mib = size / MIB
    cp_seconds = timed(["cp", "--sparse=never", str(source), str(workdir / "cp-copy.vhd")])
    cp_sync_seconds = timed(
        ["dd", f"if={source}", f"of={workdir / 'dd-copy.vhd'}", "bs=4M", "conv=fsync", "status=none"]
    )
    (workdir / "dd-copy.vhd").unlink()
    old_copy = workdir / "cp-copy.vhd"

    with sites(workdir) as (primary, endpoint):
        start = time.perf_counter()
        stub = enable(primary, "vm1", source, endpoint)
        wait_replicating(stub, "vm1")
        initial_seconds = time.perf_counter() - start
        replica = workdir / "dr-store" / "vm1" / "disks" / "d0.vhd"
        initial_ok = same(source, replica)

        assert primary.manager is not None
        device = primary.manager.device("vm1", "d0")
        rng = random.Random(4)
        blocks = rng.sample(range(size // BLOCK), int(size * churn) // BLOCK)
        for block in blocks:
            device.write(block * BLOCK, rng.randbytes(BLOCK))
        device.flush()
        start = time.perf_counter()
        replication = stub.ReplicateNow(replica_pb2.ReplicateNowRequest(vm_name="vm1"), timeout=3600)
        delta_seconds = time.perf_counter() - start
        delta_ok = same(source, replica)
        changed = replication.statistics.transferred_bytes

    rsync_seconds = timed(["rsync", "--inplace", "--no-whole-file", str(source), str(old_copy)])
    rsync_ok = same(source, old_copy)

    print(f"initial replication of {mib:.0f} MiB (fully allocated, incompressible), loopback gRPC")
    print(f"  cp (page cache, baseline)      {cp_seconds:7.2f} s  {mib / cp_seconds:8.1f} MiB/s")
    print(f"  dd conv=fsync (durable copy)   {cp_sync_seconds:7.2f} s  {mib / cp_sync_seconds:8.1f} MiB/s")
    print(
        f"  Overland initial replication   {initial_seconds:7.2f} s  {mib / initial_seconds:8.1f} MiB/s"
        f"  = {cp_seconds / initial_seconds:.0%} of cp (target >= 50%)  replica identical: {initial_ok}"
    )
    print(
        f"delta cycle at {churn:.0%} churn ({len(blocks)} random 64 KiB blocks, {changed / MIB:.1f} MiB sent)"
    )
    print(f"  rsync --inplace --no-whole-file (baseline)  {rsync_seconds:7.2f} s  identical: {rsync_ok}")
    print(
        f"  Overland delta cycle (cut, stream, commit)  {delta_seconds:7.2f} s"
        f"  = {rsync_seconds / delta_seconds:.1f}x faster than rsync (target >= 20x)  identical: {delta_ok}"
    )


if __name__ == "__main__":
    main()
