"""Benchmark: write throughput through Overland's tracking NBD export beside qemu-nbd serving the same
kind of image, with the same client (``qemu-img convert -n`` of one source file) in the same run.
Overland serves the disk as a site does: through its disk owner (``SiteDisks``), tracked as a
replication wraps it (behind the VM's write gate) or not.

Run: ``.venv/bin/python -m bench.nbd_write [--mib N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from services.replica.disks import SiteDisks
from services.replica.nbd import NbdServer
from services.replica.primary.gate import GatedDevice
from services.replica.primary.tracking import ChangeLog, TrackedDevice, WriteGate
from services.replica.vhd import DiskFormat, create_dynamic

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def make_source(path: Path, size: int) -> None:
    """Incompressible, non-zero data, so every byte is really written through NBD."""
    chunk = os.urandom(4 * MIB)
    with path.open("wb") as file:
        for _ in range(size // len(chunk)):
            file.write(chunk)


def make_target(path: Path, fmt: str, size: int) -> None:
    path.unlink(missing_ok=True)
    if fmt == "raw":
        path.write_bytes(b"")
        os.truncate(path, size)
    else:
        create_dynamic(path, size)


def convert(source: Path, port: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(source), f"nbd://127.0.0.1:{port}/disk0"],
        check=True,
        timeout=600,
    )
    return time.perf_counter() - start


def run_qemu_nbd(source: Path, target: Path, fmt: str) -> float:
    port = free_port()
    qemu_format = "vpc" if fmt == "vhd" else "raw"
    server = subprocess.Popen(
        ["qemu-nbd", "-f", qemu_format, "-x", "disk0", "-b", "127.0.0.1", "-p", str(port), "-t", str(target)],
        # The readiness probe connects and hangs up, which qemu-nbd reports on stderr.
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        return convert(source, port)
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_overland(source: Path, target: Path, fmt: str, tracked: bool) -> float:
    server = NbdServer()
    disks = SiteDisks(server)
    disk = disks.open("disk0", target, "bench", DiskFormat(fmt))
    log = target.with_suffix(".hrl")
    tracker = ChangeLog.open(log, disk.virtual_size) if tracked else None
    if tracker is not None:
        disk.swap(GatedDevice(TrackedDevice(disk.base, tracker), WriteGate()))
    port = server.start()
    try:
        return convert(source, port)
    finally:
        server.stop()
        if tracker is not None:
            tracker.close()
        disks.release(disk, "bench")
        log.unlink(missing_ok=True)


def verify(source: Path, target: Path, fmt: str) -> None:
    """Outside the timing: the target must hold exactly the source, or the number means nothing."""
    subprocess.run(
        [
            "qemu-img",
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "vpc" if fmt == "vhd" else "raw",
            str(source),
            str(target),
        ],
        check=True,
        timeout=600,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="bytes written per run, in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-nbd-", dir="/var/tmp") as folder:
        source = Path(folder) / "source.raw"
        make_source(source, size)
        print(f"NBD write throughput, qemu-img convert -n of {args.mib} MiB, {args.rounds} rounds (median):")
        for fmt in ("raw", "vhd"):
            target = Path(folder) / f"target.{fmt}"
            runs: dict[str, Callable[[Path, str], float]] = {
                "qemu-nbd (baseline)": lambda t, f: run_qemu_nbd(source, t, f),
                "overland NBD, tracking log": lambda t, f: run_overland(source, t, f, tracked=True),
                "overland NBD, untracked": lambda t, f: run_overland(source, t, f, tracked=False),
            }
            results: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, run in runs.items():
                    make_target(target, fmt, size)
                    results[name].append(run(target, fmt))
                    verify(source, target, fmt)
            baseline = size / MIB / statistics.median(results["qemu-nbd (baseline)"])
            for name, seconds in results.items():
                rate = size / MIB / statistics.median(seconds)
                print(f"  {fmt:<4} {name:<30} {rate:8.1f} MiB/s  {rate / baseline:6.0%} of qemu-nbd")


if __name__ == "__main__":
    main()
