"""Benchmark: making the point disk of a test failover (a differencing disk over the replica, seeded
from the undo layers since the point) for a 1 GiB and a 4 GiB replica with the same changes since
the point, beside the full copy of that point (``VmStore.materialize``, what a failover would cost
without point disks) in the same run.

Each replica is fully written (so the full copy really copies its size), then takes ``--deltas``
deltas of ``--changed-mib`` MiB each (the same random 64 KiB blocks of the first GiB at every size)
an hour apart;
the point disk is made at the oldest point (the most undo data to seed) ``--rounds`` times.

Run: ``.venv/bin/python -m bench.failover_point_disk [--sizes-gib 1 4] [--changed-mib 16]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from overland.v1 import replica_pb2
from services.replica.disks import SiteDisks
from services.replica.dr.store import VmStore
from services.replica.states import HOUR_NANOS

MIB = 1024 * 1024
GIB = 1024 * MIB
BLOCK = 64 * 1024
T0 = 1_800_000_000 * 10**9


def header(seq: int, size: int, points: int, full: bool = False) -> replica_pb2.DeltaHeader:
    return replica_pb2.DeltaHeader(
        vm_name="vm1",
        sequence=seq,
        disk_sizes={"d0": size},
        full=full,
        cut_time_unix_nanos=T0 + seq * HOUR_NANOS,
        additional_recovery_points=points,
    )


def build(root: Path, size: int, deltas: int, changed: int, rng: random.Random) -> VmStore:
    clock = [T0]
    store = VmStore(root, "vm1", clock=lambda: clock[0], owner=SiteDisks())
    data = os.urandom(4 * MIB)
    staging = store.begin(header(1, size, deltas, full=True))
    for index, offset in enumerate(range(0, size, len(data))):
        staging.add(index, "d0", offset, data, False)
    staging.finish(size // len(data))
    block = os.urandom(BLOCK)
    for seq in range(2, deltas + 2):
        clock[0] = T0 + seq * HOUR_NANOS
        staging = store.begin(header(seq, size, deltas))
        # The same blocks at every size (within the first GiB): only the disk's size differs.
        offsets = sorted(rng.sample(range(GIB // BLOCK), changed // BLOCK))
        for index, block_number in enumerate(offsets):
            staging.add(index, "d0", block_number * BLOCK, block, False)
        staging.finish(len(offsets))
    return store


def measure(size: int, deltas: int, changed: int, rounds: int) -> tuple[float, float, int]:
    """(median seconds to make the point disk, seconds to materialize the point, bytes seeded)."""
    with tempfile.TemporaryDirectory(prefix="bench-point-") as base:
        store = build(Path(base), size, deltas, changed, random.Random(7))
        oldest = min(p.sequence for p in store.recovery_points())
        # The replica's writeback would otherwise still run, and slow the bigger disk's rounds.
        os.sync()
        times = []
        seeded = 0
        for _ in range(rounds):
            started = time.perf_counter()
            point = store.create_point_disks("test", oldest, {"d0": "vm1 - Test/d0"})
            times.append(time.perf_counter() - started)
            seeded = sum(r[1] for r in point.devices()["d0"].child.own_ranges())
            store.drop_point_disks("test")
        started = time.perf_counter()
        store.materialize(oldest, Path(base) / "copy")
        copied = time.perf_counter() - started
        return statistics.median(times), copied, seeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-gib", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--deltas", type=int, default=3)
    parser.add_argument("--changed-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.deltas} deltas of {args.changed_mib} MiB since the point; median of {args.rounds} rounds")
    print(f"{'replica':>8} {'point disk':>11} {'seeded':>9} {'full copy':>10}")
    for gib in args.sizes_gib:
        made, copied, seeded = measure(gib * GIB, args.deltas, args.changed_mib * MIB, args.rounds)
        print(f"{gib:>5} GiB {made * 1000:>8.0f} ms {seeded / MIB:>5.0f} MiB {copied:>8.1f} s")


if __name__ == "__main__":
    main()
