"""Benchmark: a planned failover with reverse of a VM whose 4 GiB disk has 1% of changes pending,
there and back, beside a baseline measured in the same run: the plain replication cycle of as many
changes.

Two site processes, A and B, that allow each other. VM vm1 (off, as a planned failover requires) is
defined at A on a fixed 4 GiB VHD written whole with random data, and replicated to B. Each
direction writes 1% of the disk (655 random 64 KiB blocks, 41 MiB) through the current primary's NBD
export and replicates it with one cycle (the baseline), writes another 1% and times the planned
failover: the prepare at the primary (its final cycle ships the changes, then the VM is locked) and
the failover at the other site (``leave_off``: the VM is not booted; the old primary adopts its own
disk as the replica, with no copy and no hash pass, and the other site becomes the primary,
replicating at once). The bytes each cycle sent are printed: the way back's plain cycle is the new
primary's first, and sends the changes alone.

Run: ``.venv/bin/python -m bench.failover_planned [--gib 4] [--rounds 1]`` (a round: there and back).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.guest_boot import load
from bench.replica_common import GIB, SiteProcess, fill_fixed_disk, start_site, wait_replicating
from overland.replication import wait_cycle
from overland.v1 import replica_pb2, vm_pb2
from services.replica.disks import nbd_unix_url

VM = "vm1"
BLOCK = 64 * 1024


def site(workdir: Path, name: str, other: str) -> SiteProcess:
    args = [
        *("--site-name", name, "--state-dir", str(workdir / f"{name}-state"), "--tick", "0.2"),
        *("--allow", f"{other}={workdir / f'{name}-store'}", "--vswitch-endpoint", ""),
    ]
    return start_site(args, workdir / f"{name}.log")


def write_changes(workdir: Path, primary: str, size: int, rng: random.Random) -> None:
    """1% of the disk in random 64 KiB blocks, written through ``primary``'s export of the VM's disk."""
    blocks = sorted(rng.sample(range(size // BLOCK), size // 100 // BLOCK))
    pattern = rng.randrange(1, 255)
    commands = [arg for b in blocks for arg in ("-c", f"write -P {pattern} {b * BLOCK} 64k")]
    url = nbd_unix_url(f"{VM}/d0", workdir / f"{primary}-state" / "nbd.sock")
    subprocess.run(["qemu-io", "-f", "raw", *commands, url], check=True, capture_output=True, timeout=600)


def replication(at: SiteProcess) -> replica_pb2.Replication:
    answer: replica_pb2.Replication = at.replicas.get_replication(vm_name=VM)
    return answer


def one_direction(
    workdir: Path, sites: dict[str, SiteProcess], names: tuple[str, str], size: int, rng: random.Random
) -> dict[str, float]:
    """From ``names[0]`` (the VM's primary) to ``names[1]``: the baseline cycle and the planned
    failover, in seconds, and what each sent, in MiB."""
    primary, replica = sites[names[0]], sites[names[1]]
    write_changes(workdir, names[0], size, rng)
    started = time.perf_counter()
    wait_cycle(primary.replicas, primary.replicas.replicate_now(vm_name=VM))
    cycle = time.perf_counter() - started
    cycle_bytes = replication(primary).statistics.last_cycle_bytes

    write_changes(workdir, names[0], size, rng)
    started = time.perf_counter()
    prepared = primary.replicas.start_vm_failover(vm_name=VM, prepare=True)
    prepare = time.perf_counter() - started
    replica.replicas.start_vm_failover(vm_name=VM, leave_off=True)
    total = time.perf_counter() - started
    mode = replica.vms.get_vm(name=VM).replication_mode
    assert mode == vm_pb2.REPLICATION_MODE_PRIMARY, mode
    # Reversed without an initial copy: the new primary replicates (the next direction's plain cycle
    # is its first, and sends the changes alone).
    reversed_state = replication(replica).state
    assert reversed_state == replica_pb2.REPLICATION_STATE_REPLICATING, reversed_state
    return {
        "plain cycle (baseline)": cycle,
        "prepare (final cycle)": prepare,
        "failover with reverse": total - prepare,
        "planned failover in all": total,
        "cycle MiB": cycle_bytes / 2**20,
        "final cycle MiB": prepared.final_cycle_bytes / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gib", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="there-and-back pairs")
    args = parser.parse_args()
    size = args.gib * GIB
    rng = random.Random(11)
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="overland-bench-planned-") as scratch:
        workdir = Path(scratch)
        sites = {"site-a": site(workdir, "site-a", "site-b"), "site-b": site(workdir, "site-b", "site-a")}
        try:
            disk = workdir / "vm1.vhd"
            fill_fixed_disk(disk, size)
            a = sites["site-a"]
            a.vms.create_vm(name=VM, disks=[replica_pb2.VmDisk(name="d0", path=str(disk))])
            settings = replica_pb2.ReplicationSettings(
                frequency_seconds=900, replica_server=sites["site-b"].endpoint
            )
            started = time.perf_counter()
            a.replicas.enable_replication(vm=replica_pb2.VirtualMachine(name=VM), settings=settings)
            wait_replicating(a.replica_stub, VM)
            print(
                f"{args.gib} GiB, initial copy {time.perf_counter() - started:.1f} s, load {load()}",
                flush=True,
            )
            for number in range(args.rounds):
                for names in (("site-a", "site-b"), ("site-b", "site-a")):
                    result = one_direction(workdir, sites, names, size, rng)
                    results.append(result)
                    shown = ", ".join(f"{k} {v:.2f}" for k, v in result.items())
                    print(f"  round {number + 1}, {names[0]} -> {names[1]}: {shown}", flush=True)
        finally:
            for each in sites.values():
                each.stop()
    print(f"\nmedian of {len(results)} planned failovers (load at the end {load()})")
    print("| | median | range |")
    print("| --- | ---: | ---: |")
    for name in results[0]:
        values = [r[name] for r in results]
        unit = "" if "MiB" in name else " s"
        print(f"| {name} | {statistics.median(values):.2f}{unit} | {min(values):.2f}-{max(values):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
