"""TAP_KERNEL ports on real namespaces: the agent on the kernel side of a TAP that another process
opened, as qemu does (``tap_pump.TapPump`` stands in for qemu, with a kernel stack behind it).

Two hosts (PAs 198.18.0.x); blue1's NIC on host 1 is a TAP_KERNEL port, blue2 on host 2 a TAP_FD port
in its namespace. Run twice: the "qemu" with plain frames (offloads off) and with virtio-net headers
and TSO/checksum offload on. Checks ping both ways, a TCP transfer both ways (host 2's TSO
super-frames are cut by the kernel for the kernel port), the TAP's setup (quiet, persistent, owned by
root, in the agent's namespace), that the agent never reads its own sends back, capture on the port,
a datapath restart that keeps the same TAP and the "VM"'s fd, and a detach that deletes the TAP.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overland.v1 import vswitch_pb2
from services.common.table import RoutingTable
from services.vswitch import netns
from services.vswitch.datapath import DatapathConfig, NvgreSwitch, PortError
from services.vswitch.lab import Lab, demo_entries, demo_vms, snapshot
from services.vswitch.packets import parse_pcap
from tests.integration.vswitch.tap_pump import TapPump, open_as_qemu

pytestmark = pytest.mark.netns

PA1, PA2 = "198.18.0.1", "198.18.0.2"
VMS = demo_vms([PA1, PA2])
PORT = "kp-blue1"
KERNEL = vswitch_pb2.PORT_BACKEND_TAP_KERNEL
TRANSFER_BYTES = 4 * 1024 * 1024


@dataclass
class KernelPortLab:
    lab: Lab
    table: RoutingTable
    datapaths: dict[str, NvgreSwitch]
    pump: TapPump
    state_dir: Path

    @property
    def host1(self) -> str:
        return self.lab.hosts["h1"].netns

    def start_datapath(self, pa: str, netns_name: str) -> NvgreSwitch:
        config = DatapathConfig(pa_ip=pa, netns=netns_name, state_path=self.state_dir / f"{pa}.ports")
        datapath = NvgreSwitch(config)
        datapath.apply(
            self.table, self.table.reset(snapshot(demo_entries([PA1, PA2], list(VMS.values()))), 1)
        )
        datapath.start()
        self.datapaths[pa] = datapath
        return datapath

    def ping(self, vm: str, address: str, count: int = 2) -> bool:
        return self.lab.ping(self.lab.vms[vm], address, count=count)


@pytest.fixture(scope="module", params=["plain", "offload"])
def kernel_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelPortLab]:
    lab = Lab()
    pump = None
    setup = None
    try:
        h1, h2 = lab.add_host("h1", PA1), lab.add_host("h2", PA2)
        setup = KernelPortLab(lab, RoutingTable(), {}, None, tmp_path_factory.mktemp("ports"))  # type: ignore[arg-type]
        first = setup.start_datapath(PA1, h1.netns)
        second = setup.start_datapath(PA2, h2.netns)
        blue1, blue2 = VMS["blue1"], VMS["blue2"]
        attached = first.attach_port(
            vswitch_pb2.Port(name=PORT, mac=blue1.mac, vsid=blue1.vsid, backend=KERNEL)
        )
        assert attached.backend == KERNEL
        assert attached.mtu == 1458
        vm1 = lab.add_vm("blue1", h1)
        pump = TapPump(PORT, h1.netns, vm1.netns, "eth0", blue1.mac, offload=request.param == "offload")
        setup.pump = pump
        lab.configure_vm(vm1, "eth0", blue1.cidr, blue1.gateway)
        vm2 = lab.add_vm("blue2", h2)
        second.attach_port(
            vswitch_pb2.Port(name="tap-blue2", mac=blue2.mac, vsid=blue2.vsid, netns=vm2.netns)
        )
        lab.configure_vm(vm2, "tap-blue2", blue2.cidr, blue2.gateway)
        yield setup
    finally:
        if pump is not None:
            pump.close()
        if setup is not None:
            for datapath in setup.datapaths.values():
                datapath.stop()
        lab.close()


def test_the_vm_behind_a_kernel_port_pings_across_hosts_both_ways(kernel_lab: KernelPortLab) -> None:
    before = kernel_lab.datapaths[PA1].counters()
    assert kernel_lab.ping("blue1", "192.0.2.12", count=3)
    assert kernel_lab.ping("blue2", "192.0.2.11", count=3)
    after = kernel_lab.datapaths[PA1].counters()
    # Frames from the port were read (rx) and the replies were sent to it (tx), beyond the wire's.
    assert after.rx_packets >= before.rx_packets + 6
    assert after.tx_packets >= before.tx_packets + 6


def _serve_echo(vm_netns: str) -> tuple[socket.socket, threading.Thread]:
    """A TCP echo server inside a VM namespace (the socket stays there once made)."""

    def listen() -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("192.0.2.11", 7007))
        listener.listen(1)
        return listener

    listener = netns.run_in_netns(vm_netns, listen)

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_tcp_both_ways_through_the_kernel_port(kernel_lab: KernelPortLab) -> None:
    payload = os.urandom(TRANSFER_BYTES)
    listener, server = _serve_echo(kernel_lab.lab.vms["blue1"].netns)
    received = bytearray()

    def client() -> None:
        with socket.create_connection(("192.0.2.11", 7007), timeout=30) as connection:

            def send() -> None:
                connection.sendall(payload)
                connection.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            while chunk := connection.recv(65536):
                received.extend(chunk)
            sender.join()

    try:
        netns.run_in_netns(kernel_lab.lab.vms["blue2"].netns, client, timeout=120)
    finally:
        listener.close()
        server.join(timeout=5)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    drops = dict(kernel_lab.datapaths[PA1].counters().drops)
    assert drops.get("too_big", 0) == 0
    assert drops.get("send_failed", 0) == 0


def test_the_tap_is_a_quiet_persistent_port_in_the_agents_namespace(kernel_lab: KernelPortLab) -> None:
    link = netns.ip("-d", "-o", "link", "show", "dev", PORT, netns=kernel_lab.host1).stdout
    assert "NOARP" in link
    assert ",UP" in link
    assert " mtu 1458 " in link
    assert "tun type tap" in link
    assert "persist on" in link
    assert "user root" in link
    assert not netns.ip("-6", "-o", "addr", "show", "dev", PORT, netns=kernel_lab.host1).stdout.strip()
    assert not netns.ip("-4", "-o", "addr", "show", "dev", PORT, netns=kernel_lab.host1).stdout.strip()
    # The TAP takes one opener, and that is the "qemu": the agent holds no fd of it.
    with pytest.raises(OSError, match="busy"):
        open_as_qemu(PORT, kernel_lab.host1, offload=False)


def test_the_agent_does_not_read_its_own_sends_back(kernel_lab: KernelPortLab) -> None:
    assert kernel_lab.ping("blue2", "192.0.2.11", count=3)
    drops = dict(kernel_lab.datapaths[PA1].counters().drops)
    # A frame the switch sent to blue1, read back as blue1's, would carry blue2's source MAC.
    assert drops.get("source_mac_spoofed", 0) == 0
    assert drops.get("source_ip_spoofed", 0) == 0


def test_capture_extension_sees_the_kernel_ports_frames(kernel_lab: KernelPortLab, tmp_path: Path) -> None:
    datapath = kernel_lab.datapaths[PA1]
    capture = tmp_path / "port.pcap"
    extension = vswitch_pb2.Extension(
        name="cap",
        kind=vswitch_pb2.Extension.Kind.KIND_CAPTURE,
        order=0,
        enabled=True,
        settings={"path": str(capture), "ports": PORT},
    )
    datapath.configure_extension(extension)
    try:
        assert kernel_lab.ping("blue1", "192.0.2.12", count=2)
        frames = [data for _time, data in parse_pcap(capture.read_bytes())[1]]
    finally:
        # Reconfigured, a capture opens its file anew: a disabled one writes elsewhere.
        extension.enabled = False
        extension.settings["path"] = str(tmp_path / "disabled.pcap")
        datapath.configure_extension(extension)
    ingress = [f for f in frames if len(f) >= 34 and f[26:30] == bytes((192, 0, 2, 11))]
    assert ingress, f"no frame from blue1 in {len(frames)} captured"


def test_a_restarted_datapath_reattaches_the_same_tap_and_the_vm_keeps_its_fd(
    kernel_lab: KernelPortLab,
) -> None:
    index_before = netns.ip("-o", "link", "show", "dev", PORT, netns=kernel_lab.host1).stdout.split(":")[0]
    kernel_lab.datapaths.pop(PA1).stop()
    # Between the two, the VM's frames go nowhere; its TAP and its fd stay.
    assert netns.link_exists(PORT, kernel_lab.host1)
    restarted = kernel_lab.start_datapath(PA1, kernel_lab.host1)
    ports = {port.name: port for port in restarted.ports()}
    assert ports[PORT].backend == KERNEL
    assert kernel_lab.ping("blue1", "192.0.2.12", count=3)
    index_after = netns.ip("-o", "link", "show", "dev", PORT, netns=kernel_lab.host1).stdout.split(":")[0]
    assert index_after == index_before
    assert not kernel_lab.pump.errors


def test_bad_kernel_ports_are_refused(kernel_lab: KernelPortLab) -> None:
    datapath = kernel_lab.datapaths[PA1]
    blue1 = VMS["red1"]
    with pytest.raises(PortError, match="no netns"):
        datapath.attach_port(
            vswitch_pb2.Port(
                name="kp-red1", mac=blue1.mac, vsid=blue1.vsid, backend=KERNEL, netns="elsewhere"
            )
        )
    with pytest.raises(PortError, match="not a TAP"):
        datapath.attach_port(vswitch_pb2.Port(name="pa0", mac=blue1.mac, vsid=blue1.vsid, backend=KERNEL))
    assert netns.link_exists("pa0", kernel_lab.host1)


def test_detach_deletes_the_tap_under_the_vm(kernel_lab: KernelPortLab) -> None:
    datapath = kernel_lab.datapaths[PA1]
    datapath.detach_port(PORT)
    assert not netns.link_exists(PORT, kernel_lab.host1)
    assert PORT not in {port.name for port in datapath.ports()}
    # The "qemu" still holds its fd; its next write to it fails, as qemu's would.
    assert not kernel_lab.ping("blue1", "192.0.2.12", count=1)
    deadline = time.monotonic() + 10
    while not kernel_lab.pump.errors and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kernel_lab.pump.errors
