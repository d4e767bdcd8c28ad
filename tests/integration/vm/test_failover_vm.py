"""Failover with real guests (two boots): a test failover boots at the DR site while replication
goes on, and a planned failover there and back ends with the original primary running the VM.

Site A replicates a VM (its disk from ``make_vm_disk``, never booted at A: the disk's writes come
through A's export, as a guest's would) to site B, whose VMs run in a network namespace of their own
on plain TAPs (no agent). The test failover boots "<name> - Test" at the latest point with the NIC's
failover settings on its kernel command line; while it runs, A writes and replicates again, and the
commit preserves what the test VM reads under it. The guest answers ping at its failover address.
Stopping the test deletes the VM and its disk, and B's replica is A's disk (qemu-img compare).

The planned failover goes to B and back with the VM off (B's writes through its export, as a guest's
would be), then A starts the VM: it boots with its own settings on A's disk, and the bytes sent
after the first copy are the changes alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2, vm_pb2
from services.replica.vm import NETWORK_UP, Accel, make_vm_disk, synced_records
from services.vswitch import netns
from tests.integration.replica.conftest import qemu_compare, qemu_io
from tests.integration.replica.failover_sites import Site, define_and_replicate, failed, site
from tests.integration.vm.conftest import BOOT_TIMEOUT, DISK_SIZE, GuestImage, ping

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

VM = "web1"
TEST_VM = f"{VM} - Test"
FAILOVER_IP = "198.51.100.20"


@pytest.fixture
def sites(guest_image: GuestImage, accel: Accel, tmp_path: Path) -> Iterator[tuple[Site, Site, Path, str]]:
    namespace = f"ovl-fo-{os.getpid()}"
    netns.create_netns(namespace)
    runtime = ("--guest-image", str(guest_image.kernel.parent), "--accel", accel.value)
    a = site(tmp_path, "site-a", "site-b", *runtime)
    b = site(tmp_path, "site-b", "site-a", *runtime, "--vm-netns", namespace)
    disk = make_vm_disk(guest_image.rootfs, tmp_path / "web1.vhd", DISK_SIZE)
    a.process.start()
    b.process.start()
    try:
        yield a, b, disk, namespace
    finally:
        try:
            if b.vm(TEST_VM).state != vm_pb2.VM_STATE_OFF:
                b.vms.StopVm(vm_pb2.StopVmRequest(name=TEST_VM, turn_off=True), timeout=30)
        except grpc.RpcError:
            pass
        a.process.stop()
        b.process.stop()
        netns.delete_netns(namespace)


def replicate(a: Site, b: Site, disk: Path) -> None:
    """The VM defined at A with one NIC, replicated to B."""
    nic = replica_pb2.VmNic(
        mac="52:54:00:0b:00:0a",
        vsid=5001,
        addresses=["192.0.2.10/24"],
        failover_addresses=[f"{FAILOVER_IP}/24"],
        test_vsid=5002,
    )
    define_and_replicate(a, b, VM, disk, nics=(nic,), points=1)


def test_a_test_failover_boots_while_replication_goes_on(sites: tuple[Site, Site, Path, str]) -> None:
    a, b, disk, namespace = sites
    replicate(a, b, disk)
    # The replica VM is locked at B: starting it is refused, naming why.
    error = failed(lambda: b.vms.StartVm(vm_pb2.StartVmRequest(name=VM), timeout=30))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "fail it over to start it" in str(error.details())

    started = b.failover(VM, as_test=True)
    assert started.test_vm_name == TEST_VM
    test_vm = b.vm(TEST_VM)
    assert test_vm.state == vm_pb2.VM_STATE_RUNNING
    assert test_vm.network_settings == vm_pb2.VM_NETWORK_SETTINGS_TEST
    assert f"overland.nic0.ip={FAILOVER_IP}/24" in test_vm.kernel_command_line
    # Replication goes on under the running test VM (the last 1 MiB of the disk: no file lives there).
    qemu_io(a.nbd(f"{VM}/d0"), f"write -P 0x5a {DISK_SIZE - 1024 * 1024} 1M", fmt="raw")
    assert a.cycle(VM).last_sequence == 2
    assert f"overland-guest: nic 0 eth0 address {FAILOVER_IP}/24" in b.wait_console(TEST_VM, NETWORK_UP)
    deadline = time.monotonic() + BOOT_TIMEOUT
    # Its port is a TAP in B's VM namespace: the host side answers for the subnet.
    (port,) = test_vm.ports
    netns.configure_link(port, namespace, addresses=("198.51.100.1/24",))
    assert ping(namespace, FAILOVER_IP, time.monotonic() + BOOT_TIMEOUT)
    qemu_io(a.nbd(f"{VM}/d0"), f"write -P 0x5b {DISK_SIZE - 1024 * 1024} 64k", fmt="raw")
    assert a.cycle(VM).last_sequence == 3
    while synced_records(b.console(TEST_VM)).get(1, 0) < 3:
        assert time.monotonic() < deadline, "the test VM's workload stopped writing"
        time.sleep(0.5)

    b.replicas.StopVmFailover(replica_pb2.StopVmFailoverRequest(vm_name=VM), timeout=60)
    assert failed(lambda: b.vm(TEST_VM)).code() == grpc.StatusCode.NOT_FOUND
    assert not (b.store / VM / "point-disks").exists() or not any((b.store / VM / "point-disks").iterdir())
    # What the test VM wrote went nowhere: the replica is exactly A's disk.
    compared = qemu_compare(disk, b.store / VM / "disks" / "d0.vhd")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert [e.operation for e in b.history(VM)] == ["start test failover", "stop test failover"]


def test_a_planned_failover_and_back_ends_with_the_primary_running_the_vm(
    sites: tuple[Site, Site, Path, str],
) -> None:
    a, b, disk, _namespace = sites
    replicate(a, b, disk)
    copied = a.replication(VM).statistics.transferred_bytes
    prepared = a.failover(VM, prepare=True)
    b.failover(VM, leave_off=True)
    assert b.vm(VM).replication_mode == vm_pb2.REPLICATION_MODE_PRIMARY
    qemu_io(b.nbd(f"{VM}/d0"), f"write -P 0x5c {DISK_SIZE - 1024 * 1024} 1M", fmt="raw")
    sent = b.cycle(VM).statistics.transferred_bytes
    back = b.failover(VM, prepare=True)
    a.failover(VM)
    # After the first copy only the changes travelled: 1 MiB and two final cycles.
    after_copy = prepared.final_cycle_bytes + sent + back.final_cycle_bytes
    assert after_copy <= 1024 * 1024 + 256 * 1024, after_copy
    assert after_copy < copied // 8
    text = a.wait_console(VM, NETWORK_UP)
    assert "overland-guest: nic 0 eth0 address 192.0.2.10/24" in text
    assert a.vm(VM).network_settings == vm_pb2.VM_NETWORK_SETTINGS_PRIMARY
    assert b.vm(VM).replication_mode == vm_pb2.REPLICATION_MODE_REPLICA
    assert "kind=initial" not in b.log()
    a.vms.StopVm(vm_pb2.StopVmRequest(name=VM, turn_off=True), timeout=30)
