"""A VM run through the VmService API of a real site process, on the overlay, and replicated to a
second site while it runs.

An overlay of two hosts (etcd, the policy service, an agent process per host namespace, the demo
tenancy). Site A (``python -m services.replica``) runs qemu in host 1's namespace: its VM is the
demo's blue1 (192.0.2.11, VSID 5001), its disk a dynamic VHD made by ``make_vm_disk`` served by the
site's NBD export over its unix socket, its NIC a TAP_KERNEL port the site asks host 1's agent for.
In file order, sharing one boot: the API refuses bad input by field, the VM boots and its console is
read through the API and the CLI, blue2 (a namespace on host 2) pings it over NVGRE, replication to
site B is enabled while it runs, site A restarts under it (the VM is adopted and its guest keeps
writing through the restarted export), it stops gracefully, and a cycle with the VM stopped makes
site B's replica equal to the disk (qemu-img compare). Then a start that is turned off at once, and
the VM's removal, which detaches its port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from overland.errors import error_from_rpc
from overland.v1 import replica_pb2, replica_pb2_grpc, vm_pb2, vm_pb2_grpc, vswitch_pb2
from services.replica.vm import (
    NETWORK_UP,
    WORKLOAD_LOG,
    Accel,
    check_filesystem,
    lost_records,
    make_vm_disk,
    parse_workload_log,
    raw_copy,
    read_guest_file,
    synced_records,
)
from services.vswitch import netns
from services.vswitch.demo import AgentProcess, OverlayDemo
from tests.integration.replica.conftest import ServiceProcess, free_port, qemu_compare, replicate_now
from tests.integration.vm.conftest import BOOT_TIMEOUT, DISK_SIZE, STOP_TIMEOUT, GuestImage
from tests.integration.vswitch.overlay import overlay_cluster

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.etcd]

OVERLAND = Path(sys.executable).with_name("overland")
PA1, PA2 = "198.18.0.1", "198.18.0.2"
# The demo tenancy's blue1 (its lookup record is on host 1), run as a real VM.
VM = "blue1"
VM_CA = "192.0.2.11"
REPLICATION_TIMEOUT = 120.0


@dataclass
class Sites:
    base: Path
    demo: OverlayDemo
    a: ServiceProcess
    b: ServiceProcess
    disk: Path

    @property
    def host1(self) -> AgentProcess:
        return self.demo.agent_of(PA1)

    def ping_vm(self) -> bool:
        """Whether blue2, on host 2, gets an answer from the VM over the overlay in time."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.demo.ping("blue2", VM_CA, count=1, wait=2):
                return True
        return False

    def ports(self) -> dict[str, vswitch_pb2.Port]:
        listed = self.host1.stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=10)
        return {port.name: port for port in listed.ports}

    @property
    def vms(self) -> vm_pb2_grpc.VmServiceStub:
        return vm_pb2_grpc.VmServiceStub(grpc.insecure_channel(self.a.endpoint))

    @property
    def replicas(self) -> replica_pb2_grpc.ReplicaServiceStub:
        return replica_pb2_grpc.ReplicaServiceStub(grpc.insecure_channel(self.a.endpoint))

    def vm(self) -> vm_pb2.Vm:
        return self.vms.GetVm(vm_pb2.GetVmRequest(name=VM), timeout=10)

    def console_bytes(self) -> bytes:
        """The whole console log, read through the API chunk by chunk."""
        data, offset = b"", 0
        while True:
            chunk = self.vms.GetConsoleLog(vm_pb2.GetConsoleLogRequest(name=VM, offset=offset), timeout=10)
            data += chunk.data
            offset = chunk.next_offset
            if offset >= chunk.size:
                return data

    def console(self) -> str:
        return self.console_bytes().decode(errors="replace")

    def wait_for_console(self, text: str, after: int = 0) -> str:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            console = self.console()
            if text in console[after:]:
                return console
            assert self.vm().state == vm_pb2.VM_STATE_RUNNING, console[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} on the console: {console[-3000:]}"
            time.sleep(0.5)

    def cli(self, *args: str, json_output: bool = False) -> subprocess.CompletedProcess[str]:
        """``overland [--json] vm --endpoint SITE-A ARGS``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERLAND_", "OTEL_"))}
        return subprocess.run(
            [str(OVERLAND), *(["--json"] if json_output else []), *self.vm_args(*args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def vm_args(self, *args: str) -> list[str]:
        return ["vm", "--endpoint", self.a.endpoint, *args]

    def replication(self) -> replica_pb2.Replication:
        return self.replicas.GetReplication(replica_pb2.GetReplicationRequest(vm_name=VM), timeout=10)


def wait_replicating(sites: Sites) -> replica_pb2.Replication:
    deadline = time.monotonic() + REPLICATION_TIMEOUT
    while True:
        replication = sites.replication()
        if replication.state == replica_pb2.REPLICATION_STATE_REPLICATING:
            return replication
        assert time.monotonic() < deadline, f"not replicating: {replication}"
        time.sleep(0.3)


def violations(error: grpc.RpcError) -> set[str]:
    """The field names of a status's BadRequest details."""
    return {v.field for v in error_from_rpc(error).field_violations}


@pytest.fixture(scope="module")
def sites(guest_image: GuestImage, accel: Accel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    base = tmp_path_factory.mktemp("sites")
    disk = make_vm_disk(guest_image.rootfs, base / "blue1.vhd", DISK_SIZE)
    with overlay_cluster(base / "overlay", pas=(PA1, PA2), external_vms=frozenset({VM})) as (demo, _etcd):
        host1 = demo.agent_of(PA1)
        a = ServiceProcess(
            [
                *("--site-name", "site-a", "--state-dir", str(base / "a"), "--tick", "0.2"),
                *("--guest-image", str(guest_image.kernel.parent), "--accel", accel.value),
                # qemu runs where host 1's agent makes its ports; the site reaches the agent's API.
                *("--vm-netns", host1.host.netns, "--vswitch-endpoint", f"127.0.0.1:{host1.relay.port}"),
            ],
            free_port(),
            base / "a.log",
        )
        b = ServiceProcess(
            [
                "--site-name",
                "site-b",
                "--state-dir",
                str(base / "b"),
                "--allow",
                f"site-a={base / 'b-store'}",
            ],
            free_port(),
            base / "b.log",
        )
        sites = Sites(base, demo, a.start(), b.start(), disk)
        try:
            yield sites
        finally:
            # Whatever a failed test left running: turn it off, so no qemu outlives the test.
            try:
                if sites.vm().state != vm_pb2.VM_STATE_OFF:
                    sites.vms.StopVm(vm_pb2.StopVmRequest(name=VM, turn_off=True), timeout=30)
            except grpc.RpcError:
                pass
            a.stop()
            b.stop()


def nic(sites: Sites) -> replica_pb2.VmNic:
    blue1 = sites.demo.vms[VM]
    return replica_pb2.VmNic(
        mac=blue1.mac, vsid=blue1.vsid, ca=VM_CA, addresses=[blue1.cidr], gateway=blue1.gateway
    )


def test_bad_input_is_refused_by_field_and_the_vm_is_defined_off(sites: Sites) -> None:
    bad = replica_pb2.VirtualMachine(
        name="bad name ",
        memory_bytes=32 * 1024 * 1024,
        disks=[replica_pb2.VmDisk(name="d0", path="relative.vhd")],
        nics=[replica_pb2.VmNic(mac="01:00:5e:00:00:01", vsid=1, addresses=["192.0.2.0/24"])],
    )
    with pytest.raises(grpc.RpcError) as caught:
        sites.vms.CreateVm(vm_pb2.CreateVmRequest(vm=bad), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) >= {
        "vm.name",
        "vm.memory_bytes",
        "vm.disks[0].path",
        "vm.nics[0].mac",
        "vm.nics[0].vsid",
    }
    created = sites.vms.CreateVm(
        vm_pb2.CreateVmRequest(
            vm=replica_pb2.VirtualMachine(
                name=VM, disks=[replica_pb2.VmDisk(name="d0", path=str(sites.disk))], nics=[nic(sites)]
            )
        ),
        timeout=10,
    )
    assert created.state == vm_pb2.VM_STATE_OFF
    assert created.replication_mode == vm_pb2.REPLICATION_MODE_NONE
    with pytest.raises(grpc.RpcError) as caught:
        sites.vms.StopVm(vm_pb2.StopVmRequest(name=VM), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is off" in str(caught.value.details())


def test_the_vm_boots_its_console_shows_it_and_it_answers_ping(sites: Sites) -> None:
    started = sites.vms.StartVm(vm_pb2.StartVmRequest(name=VM), timeout=60)
    assert started.state == vm_pb2.VM_STATE_RUNNING
    assert started.pid > 0
    assert started.accelerator in ("kvm", "tcg")
    for call in (
        lambda: sites.vms.StartVm(vm_pb2.StartVmRequest(name=VM), timeout=10),
        lambda: sites.vms.DeleteVm(vm_pb2.DeleteVmRequest(name=VM), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "is running" in str(caught.value.details())
    # Its NIC is a port of host 1's agent: a TAP_KERNEL port with the VM's MAC and VSID, whose CA
    # the agent found in blue1's lookup record.
    (name,) = started.ports
    port = sites.ports()[name]
    assert (port.backend, port.mac, port.vsid, port.ca) == (
        vswitch_pb2.PORT_BACKEND_TAP_KERNEL,
        sites.demo.vms[VM].mac,
        sites.demo.vms[VM].vsid,
        VM_CA,
    )
    console = sites.wait_for_console(NETWORK_UP)
    assert f"overland-guest: nic 0 eth0 address {VM_CA}/24" in console
    assert sites.ping_vm()
    # The CLI reads the same console and the same VM.
    printed = sites.cli("console", VM)
    assert printed.returncode == 0, printed.stderr
    assert NETWORK_UP in printed.stdout
    shown = sites.cli("get", VM)
    assert shown.returncode == 0, shown.stderr
    assert "RUNNING" in shown.stdout


def test_replication_is_enabled_while_the_vm_runs(sites: Sites) -> None:
    # The VM is defined here: its disks, NICs and size come from its definition.
    enabled = sites.replicas.EnableReplication(
        replica_pb2.EnableReplicationRequest(
            vm=replica_pb2.VirtualMachine(name=VM),
            settings=replica_pb2.ReplicationSettings(frequency_seconds=30, replica_server=sites.b.endpoint),
        ),
        timeout=30,
    )
    assert [(d.name, d.path) for d in enabled.vm.disks] == [("d0", str(sites.disk))]
    assert list(enabled.vm.nics[0].addresses) == [f"{VM_CA}/24"]
    wait_replicating(sites)
    assert sites.vm().replication_mode == vm_pb2.REPLICATION_MODE_PRIMARY


def test_the_site_restarts_under_the_running_vm(sites: Sites) -> None:
    before = sites.vm()
    written = synced_records(sites.console()).get(1, 0)
    sites.a.stop()
    sites.a.start()
    after = sites.vm()
    assert after.state == vm_pb2.VM_STATE_RUNNING
    assert after.pid == before.pid
    assert after.start_time_unix_nanos == before.start_time_unix_nanos
    # The guest's writes go on through the restarted export (qemu's NBD client waited for it).
    deadline = time.monotonic() + BOOT_TIMEOUT
    while synced_records(sites.console()).get(1, 0) < written + 3:
        assert time.monotonic() < deadline, "the guest stopped writing after the site restarted"
        time.sleep(0.5)
    assert sites.ping_vm()
    assert sites.replication().state == replica_pb2.REPLICATION_STATE_REPLICATING


def test_a_graceful_stop_and_a_cycle_make_the_replica_equal_the_disk(sites: Sites) -> None:
    stopped = sites.vms.StopVm(vm_pb2.StopVmRequest(name=VM, timeout_seconds=int(STOP_TIMEOUT)), timeout=90)
    assert stopped.state == vm_pb2.VM_STATE_OFF
    assert stopped.last_stop == "shut down"
    assert stopped.pid == 0
    replicated = replicate_now(sites.replicas, VM)
    assert replicated.last_sequence >= 2
    replica = sites.base / "b-store" / VM / "disks" / "d0.vhd"
    compared = qemu_compare(sites.disk, replica)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    # What the guest wrote is there: a clean filesystem with every record it called synced.
    copy = raw_copy(replica, "vpc", sites.base / "replica.raw")
    assert check_filesystem(copy).clean
    records = parse_workload_log(read_guest_file(copy, WORKLOAD_LOG).decode())
    assert records
    assert lost_records(records, synced_records(sites.console())) == []


def test_a_start_turned_off_at_once_is_off_and_follow_ends(sites: Sites) -> None:
    offset = len(sites.console_bytes())
    started = sites.cli("start", VM)
    assert started.returncode == 0, started.stderr
    follow = subprocess.Popen(
        [str(OVERLAND), *sites.vm_args("console", VM, "--follow", "--offset", str(offset))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    turned_off = sites.cli("stop", VM, "--turn-off", json_output=True)
    assert turned_off.returncode == 0, turned_off.stderr
    assert json.loads(turned_off.stdout)["last_stop"] == "turned off"
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    # The follower printed this run's console whole, and ended when the VM was off.
    assert out == sites.console_bytes()[offset:]
    assert sites.vm().state == vm_pb2.VM_STATE_OFF


def test_the_vm_is_removed_once_its_replication_is(sites: Sites) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        sites.vms.DeleteVm(vm_pb2.DeleteVmRequest(name=VM), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    sites.replicas.DisableReplication(replica_pb2.DisableReplicationRequest(vm_name=VM), timeout=30)
    port = sites.vm().ports[0]
    assert port in sites.ports()
    removed = sites.cli("remove", VM)
    assert removed.returncode == 0, removed.stderr
    # Its port is detached, and the agent deleted the TAP.
    assert port not in sites.ports()
    assert not netns.link_exists(port, sites.host1.host.netns)
    assert sites.disk.exists()
    gone = sites.cli("get", VM)
    assert gone.returncode == 4
    assert sites.cli("list", json_output=True).stdout.strip() == "[]"
