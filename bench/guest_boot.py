"""Benchmark: guest boot time under TCG, from qemu's start to "network up" on the serial console, beside
a baseline measured in the same run: the same kernel booting its initramfs alone (no root disk, no
NIC, powered off as soon as the initramfs runs).

The full guest boots from a dynamic VHD served by the replica service's tracking NBD export (unix
socket) with one NIC (a ``-netdev stream`` server, which needs no namespace); each round gets a fresh
disk. Each configuration runs with the PVH ``vmlinux`` the build extracts and with Debian's bzImage
``vmlinuz``, to show what the direct boot saves. A graceful stop (ACPI powerdown until qemu exits) is
timed after each full boot.

Run: ``.venv/bin/python -m bench.guest_boot [--rounds N]`` (after ``make guest``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.replica.nbd import NbdServer
from services.replica.primary.tracking import ChangeLog, TrackedDevice
from services.replica.vhd import open_disk
from services.replica.vm import (
    INITRAMFS_READY,
    NETWORK_UP,
    Accel,
    Disk,
    GuestNetwork,
    Nic,
    NicSettings,
    StreamBackend,
    VmProcess,
    VmSpec,
    kernel_command_line,
    make_vm_disk,
)

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
DISK_SIZE = 64 * MIB
MAC = "52:54:00:be:00:01"
BOOT_TIMEOUT = 180.0
# Console milestones, in boot order: the kernel's first line, the initramfs, the root, the network.
MILESTONES = {
    "kernel": "Linux version",
    "initramfs": INITRAMFS_READY,
    "root": "overland-initramfs: mounted /dev/vda",
    "network": NETWORK_UP,
}


def guest_image() -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_guest.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return dict(json.loads(done.stdout))


def timed_boot(vm: VmProcess, milestones: dict[str, str]) -> dict[str, float]:
    """Seconds from ``start`` to each milestone's console line."""
    start = time.perf_counter()
    vm.start()
    times = {}
    for name, text in milestones.items():
        vm.wait_for_console(text, BOOT_TIMEOUT)
        times[name] = time.perf_counter() - start
    return times


def baseline_round(image: dict[str, str], kernel: str, workdir: Path) -> dict[str, float]:
    spec = VmSpec(
        name="bench-initramfs",
        kernel=Path(kernel),
        initrd=Path(image["initrd"]),
        append=kernel_command_line(GuestNetwork(), break_at="initramfs"),
    )
    with VmProcess(spec, workdir, Accel.TCG) as vm:
        times = timed_boot(vm, {k: MILESTONES[k] for k in ("kernel", "initramfs")})
        vm.wait(BOOT_TIMEOUT)
    return times


def guest_round(image: dict[str, str], kernel: str, workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True)
    disk = make_vm_disk(Path(image["rootfs"]), workdir / "disk.vhd", DISK_SIZE)
    server = NbdServer(unix_path=workdir / "nbd.sock")
    device = TrackedDevice(open_disk(disk, writable=True), ChangeLog.open(workdir / "disk.hrl", DISK_SIZE))
    server.add_export("vm0", device)
    server.start()
    try:
        network = GuestNetwork((NicSettings.parse(MAC, ["192.0.2.10/24"], "192.0.2.1"),))
        spec = VmSpec(
            name="bench-guest",
            kernel=Path(kernel),
            initrd=Path(image["initrd"]),
            append=kernel_command_line(network),
            disks=(Disk(f"nbd+unix:///vm0?socket={workdir / 'nbd.sock'}"),),
            nics=(Nic(MAC, StreamBackend(str(workdir / "nic.sock"), server=True)),),
        )
        with VmProcess(spec, workdir / "vm", Accel.TCG) as vm:
            times = timed_boot(vm, MILESTONES)
            start = time.perf_counter()
            vm.stop(BOOT_TIMEOUT)
            times["graceful stop"] = time.perf_counter() - start
        return times
    finally:
        server.stop()
        device.close()


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="boots per configuration (median reported)")
    args = parser.parse_args()
    image = guest_image()
    kernels = {"vmlinux (PVH)": image["kernel"], "vmlinuz (bzImage)": image["vmlinuz"]}
    print(f"guest {image['key']} kernel {image['kernel_release']}, TCG, {args.rounds} rounds, load {load()}")
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="overland-bench-boot-") as scratch:
        for round_number in range(args.rounds):
            # Interleaved, so load that comes and goes falls on every configuration alike.
            for index, (label, kernel) in enumerate(kernels.items()):
                base = Path(scratch) / f"{round_number}-{index}"
                runs = (
                    (f"initramfs only (baseline), {label}", baseline_round, "initramfs"),
                    (f"guest from the NBD export, {label}", guest_round, "network"),
                )
                for name, run, last in runs:
                    times = run(image, kernel, base / last)
                    results.setdefault(name, []).append(times)
                    print(f"  round {round_number + 1}: {name}: {times[last]:.1f} s", flush=True)
    columns = [*MILESTONES, "graceful stop"]
    print(f"\nmedian seconds from qemu start (load at the end {load()})")
    print("| configuration | " + " | ".join(columns) + " |")
    print("| --- | " + " | ".join("---:" for _ in columns) + " |")
    for name, rounds in results.items():
        cells = []
        for column in columns:
            values = [r[column] for r in rounds if column in r]
            cells.append(f"{statistics.median(values):.1f}" if values else "")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
