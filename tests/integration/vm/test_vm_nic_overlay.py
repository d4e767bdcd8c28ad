"""A qemu VM whose NIC is a TAP_KERNEL port of a real vswitch agent, on the overlay (issue 11).

etcd, the policy service and two agent processes in host namespaces (PAs 198.18.0.1 and .2), the demo
tenancy written through the policy API. blue1 (192.0.2.11, VSID 5001) is a real guest under qemu on
host 1: the agent creates the TAP and attaches to its kernel side, qemu opens it by name. blue2
(192.0.2.12) is a namespace behind a TAP_FD port on host 2. One boot, shared by the tests in file
order: ping both ways over NVGRE with the VSID in the GRE key (tshark on host 1's PA link), TCP echo
with the guest, the hosts' registrations from the agents themselves and a record move by host name
that the datapaths follow, and a restart of host 1's agent that the VM does not notice.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc, vswitch_pb2
from services.replica.vm import (
    ECHO_PORT,
    NETWORK_UP,
    Accel,
    Disk,
    GuestNetwork,
    Nic,
    NicSettings,
    TapBackend,
    VmProcess,
    VmSpec,
    VmState,
    kernel_command_line,
    make_vm_disk,
)
from services.vswitch import netns
from services.vswitch.demo import AgentProcess, OverlayDemo
from services.vswitch.lab import BLUE_A
from tests.integration.vm.conftest import BOOT_TIMEOUT, DISK_SIZE, GuestImage
from tests.integration.vswitch.overlay import nvgre_capture, overlay_cluster, tshark_fields

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.etcd]

PA1, PA2 = "198.18.0.1", "198.18.0.2"
PORT = "vnblue1"
VM_CA, PEER_CA = "192.0.2.11", "192.0.2.12"
KERNEL = vswitch_pb2.PORT_BACKEND_TAP_KERNEL


@dataclass
class VmOnOverlay:
    demo: OverlayDemo
    policy: policy_pb2_grpc.PolicyServiceStub
    vm: VmProcess

    @property
    def host1(self) -> AgentProcess:
        return self.demo.agent_of(PA1)

    def host_netns(self, pa: str) -> str:
        return self.demo.agent_of(pa).host.netns

    def ping_vm(self, deadline: float, count: int = 1) -> bool:
        """Whether the VM answers blue2's ping before ``deadline`` (monotonic)."""
        while time.monotonic() < deadline:
            if self.demo.ping("blue2", VM_CA, count=count, wait=2):
                return True
        return False

    def applied_everywhere(self) -> None:
        revision = self.demo.revision()
        for agent in self.demo.agents.values():
            agent.wait_applied(revision)


@pytest.fixture(scope="module")
def overlay(
    guest_image: GuestImage, accel: Accel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VmOnOverlay]:
    workdir = tmp_path_factory.mktemp("vm-nic")
    with overlay_cluster(workdir, pas=(PA1, PA2), external_vms=frozenset({"blue1"})) as (demo, _etcd):
        blue1 = demo.vms["blue1"]
        attached = demo.agent_of(PA1).stub.AttachPort(
            vswitch_pb2.AttachPortRequest(
                port=vswitch_pb2.Port(
                    name=PORT, mac=blue1.mac, vsid=blue1.vsid, vm_name="blue1", backend=KERNEL
                )
            ),
            timeout=30,
        )
        assert (attached.backend, attached.ca, attached.mtu) == (KERNEL, VM_CA, 1458)
        network = GuestNetwork((NicSettings.parse(blue1.mac, [blue1.cidr], blue1.gateway, []),))
        spec = VmSpec(
            name="blue1",
            kernel=guest_image.kernel,
            initrd=guest_image.initrd,
            append=kernel_command_line(network),
            disks=(Disk(str(make_vm_disk(guest_image.rootfs, workdir / "blue1.vhd", DISK_SIZE)), "vpc"),),
            nics=(Nic(blue1.mac, TapBackend(PORT)),),
        )
        # qemu runs in the agent's namespace, where the TAP is, and opens it by name.
        vm = VmProcess(spec, workdir / "vm", accel, netns=demo.agent_of(PA1).host.netns)
        try:
            vm.start()
            vm.wait_for_console(NETWORK_UP, BOOT_TIMEOUT)
            yield VmOnOverlay(demo, demo.policy, vm)
        finally:
            vm.close()


def test_the_vm_and_a_namespace_on_another_host_ping_each_other_over_nvgre(
    overlay: VmOnOverlay, tmp_path: Path
) -> None:
    pcap = tmp_path / "pa1.pcap"
    with nvgre_capture(overlay.host_netns(PA1), pcap):
        assert overlay.ping_vm(time.monotonic() + BOOT_TIMEOUT, count=3)
    rows = tshark_fields(pcap, ["gre.key", "gre.proto", "ip.src", "ip.dst", "icmp.type"])
    # Outer then inner addresses: host 2 -> host 1 carrying blue2 -> blue1, and the VM's replies back.
    requests = [r for r in rows if r["icmp.type"] == "8" and r["ip.src"] == f"{PA2};{PEER_CA}"]
    replies = [r for r in rows if r["icmp.type"] == "0" and r["ip.src"] == f"{PA1};{VM_CA}"]
    assert requests, rows
    assert replies, rows
    for row in requests + replies:
        assert int(row["gre.key"], 16) >> 8 == BLUE_A
        assert int(row["gre.proto"], 16) == 0x6558
    assert {r["ip.dst"] for r in replies} == {f"{PA2};{PEER_CA}"}
    drops = overlay.host1.stub.GetCounters(vswitch_pb2.GetCountersRequest(), timeout=10).drops
    # The agent never read its own sends to the VM back as the VM's.
    assert drops.get("source_mac_spoofed", 0) == 0


def test_tcp_echo_with_the_guest_through_both_agents(overlay: VmOnOverlay) -> None:
    payload = os.urandom(256 * 1024)

    def exchange() -> bytes:
        with socket.create_connection((VM_CA, ECHO_PORT), timeout=60) as connection:
            connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            received = bytearray()
            while chunk := connection.recv(65536):
                received += chunk
            return bytes(received)

    peer = overlay.demo.lab.vms["blue2"].netns
    assert netns.run_in_netns(peer, exchange, timeout=180) == payload


def test_the_port_is_the_agents_persistent_tap_and_qemu_its_one_opener(overlay: VmOnOverlay) -> None:
    ports = overlay.host1.stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=10).ports
    (port,) = [p for p in ports if p.name == PORT]
    assert (port.backend, port.ca, port.netns) == (KERNEL, VM_CA, "")
    link = netns.ip("-d", "-o", "link", "show", "dev", PORT, netns=overlay.host_netns(PA1)).stdout
    assert "tun type tap" in link
    assert "persist on" in link
    assert "NOARP" in link
    # qemu holds the TAP: the carrier is up only while its one opener has it.
    assert "LOWER_UP" in link


def test_agents_register_their_hosts_and_a_move_by_host_name_reaches_the_datapaths(
    overlay: VmOnOverlay,
) -> None:
    host1, host2 = overlay.host_netns(PA1), overlay.host_netns(PA2)
    registered = overlay.policy.GetHost(policy_pb2.GetHostRequest(host_name=host1), timeout=10)
    assert (registered.pa_ip, registered.alive) == (PA1, True)
    assert {
        h.host_name for h in overlay.policy.ListHosts(policy_pb2.ListHostsRequest(), timeout=10).hosts
    } == {
        host1,
        host2,
    }
    nic = policy_pb2.RecordMove(vsid=BLUE_A, ca=VM_CA)
    away = overlay.policy.MoveLookupRecords(
        policy_pb2.MoveLookupRecordsRequest(moves=[nic], host_name=host2), timeout=10
    )
    assert away.pa == PA2
    overlay.applied_everywhere()
    # The table now says blue1 is on host 2, which has no port for it: blue2's pings go nowhere.
    assert not overlay.demo.ping("blue2", VM_CA, count=1, wait=1)
    back = overlay.policy.MoveLookupRecords(
        policy_pb2.MoveLookupRecordsRequest(moves=[nic], host_name=host1), timeout=10
    )
    assert back.lookup_records[0].pa == PA1
    overlay.applied_everywhere()
    assert overlay.ping_vm(time.monotonic() + 60)


def test_restarting_host1s_agent_keeps_the_vm_and_its_nic(overlay: VmOnOverlay) -> None:
    pid = overlay.vm.pid
    boots = overlay.vm.console(0)[0].count("overland-initramfs: ready")
    overlay.host1.stop()
    # The TAP outlives the agent (and qemu keeps its fd): nothing happens to the VM.
    assert netns.link_exists(PORT, overlay.host_netns(PA1))
    overlay.host1.start()
    overlay.host1.wait_applied(overlay.demo.revision())
    assert overlay.ping_vm(time.monotonic() + 60, count=2)
    assert overlay.vm.pid == pid
    assert overlay.vm.status().state is VmState.RUNNING
    assert overlay.vm.console(0)[0].count("overland-initramfs: ready") == boots
    ports = overlay.host1.stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=10).ports
    assert [(p.name, p.backend) for p in ports if p.name == PORT] == [(PORT, KERNEL)]
