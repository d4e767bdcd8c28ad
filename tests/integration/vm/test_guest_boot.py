"""A real guest under qemu on the replica service's tracked NBD export, with a TAP NIC in a namespace.

Two boots of one VM (boots are slow under TCG, so the tests share them, in file order): the first
checks the addresses of the kernel command line, ping and TCP echo from the host side, then ends in
a hard kill; the disk, its journal replayed on a copy, holds every write the guest acknowledged.
The second boot replays the journal itself and is stopped through ACPI as soon as its network is up:
the disk then checks clean as it is, with both boots'
acknowledged writes, and every block the guest changed is in the export's change log.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from services.replica.vm import (
    ECHO_PORT,
    ROOT_READ_ONLY,
    WORKLOAD_LOG,
    VmState,
    applied_addresses,
    check_filesystem,
    lost_records,
    parse_workload_log,
    read_guest_file,
    synced_records,
)
from services.vswitch import netns
from tests.integration.vm.conftest import (
    BOOT_TIMEOUT,
    DISK_SIZE,
    STOP_TIMEOUT,
    VmSite,
    ping,
    records_after_crash,
)

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

# Records the workload must have acknowledged before a stop, so the stop cuts a running workload.
RECORDS_BEFORE_STOP = 3


def wait_for_records(site: VmSite, count: int) -> int:
    """Wait until the running guest reports ``count`` synced records; its boot number."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        synced = synced_records(site.vm.console_since_start())
        if synced and max(synced.values()) >= count:
            return max(synced)
        assert time.monotonic() < deadline, f"the workload did not sync {count} records"
        time.sleep(0.5)


def changed_blocks(before: Path, after: Path, block_size: int) -> set[int]:
    """The numbers of the ``block_size`` blocks that differ between two raw images of one size."""
    changed: set[int] = set()
    with before.open("rb") as old, after.open("rb") as new:
        for block in itertools.count():
            old_data, new_data = old.read(block_size), new.read(block_size)
            if not old_data and not new_data:
                return changed
            if old_data != new_data:
                changed.add(block)
    return changed


def echo(namespace: str, address: str, payload: bytes) -> bytes:
    def exchange() -> bytes:
        with socket.create_connection((address, ECHO_PORT), timeout=10) as connection:
            connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
            return received

    return netns.run_in_netns(namespace, exchange, timeout=30)


def test_first_boot_applies_the_command_line_addresses_and_answers_ping(vm_site: VmSite) -> None:
    console = vm_site.boot()
    assert applied_addresses(console) == {0: ["192.0.2.10/24", "198.51.100.10/24"]}
    assert "overland-guest: nic 0 eth0 gateway 192.0.2.1" in console
    status = vm_site.vm.status()
    assert status.state is VmState.RUNNING
    assert status.qemu_status == "running"
    deadline = time.monotonic() + BOOT_TIMEOUT
    assert ping(vm_site.namespace, "192.0.2.10", deadline)
    assert ping(vm_site.namespace, "198.51.100.10", deadline)
    # An address the command line did not give is not answered.
    assert not ping(vm_site.namespace, "192.0.2.11", time.monotonic() + 2)


def test_tcp_echo_answers_on_each_address(vm_site: VmSite) -> None:
    assert vm_site.vm.is_running()
    payload = bytes(range(256)) * 64
    assert echo(vm_site.namespace, "192.0.2.10", payload) == payload
    assert echo(vm_site.namespace, "198.51.100.10", b"second address\n") == b"second address\n"


def test_a_hard_kill_keeps_every_acknowledged_write(vm_site: VmSite) -> None:
    assert vm_site.vm.is_running()
    wait_for_records(vm_site, RECORDS_BEFORE_STOP)
    vm_site.vm.kill()
    synced = synced_records(vm_site.vm.console(0)[0])
    # The guest never unmounted: the filesystem needs its journal replayed, as its next mount does.
    records = records_after_crash(vm_site.disk_copy("after-kill.raw"))
    assert lost_records(records, synced) == []


def test_reboot_after_the_kill_then_a_graceful_stop_leaves_a_clean_disk(vm_site: VmSite) -> None:
    # As a replication cycle that shipped everything: what the tracker holds now is this boot's.
    vm_site.device.snapshot().release(shipped=True)
    before = vm_site.disk_copy("before-reboot.raw")
    vm_site.boot()
    # Stopped as soon as the network is up: the guest's acpid runs by then, and a press that came
    # too early would be repeated by the runtime until the guest powers off.
    assert vm_site.vm.stop(STOP_TIMEOUT) == 0
    assert ROOT_READ_ONLY in vm_site.vm.console_since_start()
    assert vm_site.vm.status().state is VmState.STOPPED
    synced = synced_records(vm_site.vm.console(0)[0])
    after = vm_site.disk_copy("after-stop.raw")
    # No replay this time: a graceful stop leaves nothing to recover.
    fsck = check_filesystem(after)
    assert fsck.clean, fsck.output
    records = parse_workload_log(read_guest_file(after, WORKLOAD_LOG).decode())
    assert lost_records(records, synced) == []
    # Each boot's records follow the previous boot's, numbered from 1 with none skipped.
    assert [r.boot for r in records] == sorted(r.boot for r in records)
    for boot in {r.boot for r in records}:
        numbers = [r.seq for r in records if r.boot == boot]
        assert numbers == list(range(1, len(numbers) + 1))
    # Every block the guest changed went through the tracking export and is in its change log.
    block_size = vm_site.device.tracker.block_size
    changed = changed_blocks(before, after, block_size)
    tracked = {
        b for first, count in vm_site.device.tracker.changed_runs() for b in range(first, first + count)
    }
    assert changed
    assert changed <= tracked


def test_the_disk_is_a_dynamic_vhd_that_reads_as_the_export(vm_site: VmSite) -> None:
    assert not vm_site.vm.is_running()
    # The export still serves the image and holds qemu's image locks on it: qemu reads it with -U.
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(vm_site.image)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert info["format"] == "vpc"
    assert info["virtual-size"] == DISK_SIZE
    # Only what the filesystem uses is allocated.
    assert info["actual-size"] < DISK_SIZE // 2
    copy = vm_site.disk_copy("final.raw")
    subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "vpc", "-F", "raw", str(vm_site.image), str(copy)],
        capture_output=True,
        timeout=120,
        check=True,
    )
