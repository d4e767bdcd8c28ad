"""Fixtures for real VMs: the guest image (built by tools/build_guest.py, cached), the accelerator this
machine really has, and a ``VmSite``: one VM whose disk is a dynamic VHD served by the replica
service's tracking NBD export over a unix socket, and whose NIC is a TAP device in a network namespace
of its own (the "host side" the tests ping from)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.replica.nbd import NbdServer
from services.replica.primary.tracking import ChangeLog, TrackedDevice
from services.replica.vhd import open_disk
from services.replica.vm import (
    NETWORK_UP,
    WORKLOAD_LOG,
    Accel,
    Disk,
    GuestNetwork,
    Nic,
    NicSettings,
    TapBackend,
    VmProcess,
    VmSpec,
    WorkloadRecord,
    check_filesystem,
    detect_accel,
    kernel_command_line,
    make_vm_disk,
    parse_workload_log,
    raw_copy,
    read_guest_file,
    replay_journal,
)
from services.vswitch import netns

REPO = Path(__file__).resolve().parents[3]
MiB = 1024 * 1024
DISK_SIZE = 64 * MiB
EXPORT = "vm0"
# A TCG boot takes 8-25 s on a loaded 2-core machine; these bound waits for things that must happen.
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    rootfs: Path


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The guest image, built by the tool (a cache hit after ``make guest``)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_guest.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    return GuestImage(Path(built["kernel"]), Path(built["initrd"]), Path(built["rootfs"]))


@pytest.fixture(scope="session")
def accel(guest_image: GuestImage) -> Accel:
    """KVM where it boots the guest, TCG otherwise (cached per machine in .overland/)."""
    return detect_accel(guest_image.kernel, guest_image.initrd, REPO / ".overland" / "accel.json")


def ping(namespace: str, address: str, deadline: float) -> bool:
    """Whether ``address`` answers a ping from ``namespace`` before ``deadline`` (monotonic)."""
    while time.monotonic() < deadline:
        argv = netns.exec_argv(namespace, ["ping", "-n", "-c", "1", "-W", "1", address])
        if subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0:
            return True
    return False


def records_after_crash(raw: Path) -> list[WorkloadRecord]:
    """The workload's records on ``raw``, a raw copy of a disk whose guest never unmounted it: the
    journal replayed first (as the guest's next mount would), then the filesystem must check clean."""
    replay_journal(raw)
    fsck = check_filesystem(raw)
    assert fsck.clean, fsck.output
    records = parse_workload_log(read_guest_file(raw, WORKLOAD_LOG).decode())
    assert records, "the workload wrote nothing"
    return records


@dataclass
class VmSite:
    """One VM on a tracked NBD export and a TAP NIC in ``namespace``; the test's tmp folder holds it all."""

    base: Path
    namespace: str
    network: GuestNetwork
    vm: VmProcess
    server: NbdServer
    device: TrackedDevice
    image: Path
    host_addresses: tuple[str, ...]

    @property
    def export_url(self) -> str:
        return f"nbd+unix:///{EXPORT}?socket={self.base / 'nbd.sock'}"

    def boot(self) -> str:
        """Start the VM and wait for the guest's network; returns the console since the start."""
        self.vm.start()
        return self.vm.wait_for_console(NETWORK_UP, BOOT_TIMEOUT)

    def disk_copy(self, name: str) -> Path:
        """A raw copy of the disk as the export serves it (the e2fsprogs tools read raw images)."""
        return raw_copy(self.export_url, "raw", self.base / name)


@pytest.fixture(scope="module")
def vm_site(
    guest_image: GuestImage, accel: Accel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VmSite]:
    base = tmp_path_factory.mktemp("vm-site")
    namespace = f"ovl-vm-{os.getpid()}"
    tap = "vmtap0"
    mac = "52:54:00:0b:00:0a"
    network = GuestNetwork(
        (NicSettings.parse(mac, ["192.0.2.10/24", "198.51.100.10/24"], "192.0.2.1", ["192.0.2.53"]),)
    )
    image = make_vm_disk(guest_image.rootfs, base / "vm0.vhd", DISK_SIZE)
    server = NbdServer(unix_path=base / "nbd.sock")
    device = TrackedDevice(open_disk(image, writable=True), ChangeLog.open(base / "vm0.hrl", DISK_SIZE))
    server.add_export(EXPORT, device)
    server.start()
    netns.create_netns(namespace)
    try:
        netns.ip("tuntap", "add", "dev", tap, "mode", "tap", netns=namespace)
        host_addresses = ("192.0.2.1/24", "198.51.100.1/24")
        netns.configure_link(tap, namespace, addresses=host_addresses)
        spec = VmSpec(
            name="vm0",
            kernel=guest_image.kernel,
            initrd=guest_image.initrd,
            append=kernel_command_line(network),
            disks=(Disk(f"nbd+unix:///{EXPORT}?socket={base / 'nbd.sock'}"),),
            nics=(Nic(mac, TapBackend(tap)),),
        )
        vm = VmProcess(spec, base / "vm", accel, netns=namespace)
        site = VmSite(base, namespace, network, vm, server, device, image, host_addresses)
        try:
            yield site
        finally:
            vm.close()
    finally:
        netns.delete_netns(namespace)
        server.stop()
        device.close()
