"""A site attaches its VMs' NICs through a vswitch agent that serves mutual TLS (docs/security.md).

The overlay of two hosts (etcd, the policy service, an agent process per host namespace, the demo
tenancy), every agent serving its API over mutual TLS with a client CA, as deploy/k8s runs them.
Real site processes (``python -m services.replica``) define the demo's blue1 and start it in host 1's
namespace through ``VmService``, each with other ``--vswitch-*`` files:

* a ``host`` identity of host 1 (the least the agent's rules allow): the VM starts, its NIC is a
  TAP_KERNEL port of host 1's agent that qemu opens by name; the VM is turned off at once (no guest
  boot is needed) and its removal detaches the port;
* a ``host`` identity of host 2: the agent refuses it by role; the start fails naming the identity and
  the flag, nothing is attached and the VM stays off;
* a certificate of another CA: the agent refuses the handshake; the start fails naming the
  certificate, not as an agent that did not answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from overland.config import TlsFiles
from overland.v1 import replica_pb2, vm_pb2, vm_pb2_grpc, vswitch_pb2
from services.common.identity import Role
from services.replica.vm import make_vm_disk
from services.vswitch import netns
from services.vswitch.demo import AgentProcess, AgentTls, OverlayDemo
from tests.integration.replica.conftest import ServiceProcess, free_port
from tests.integration.vm.conftest import DISK_SIZE, GuestImage
from tests.integration.vswitch.overlay import overlay_cluster
from tools.pki import CertificateAuthority

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.etcd]

PA1, PA2 = "198.18.0.1", "198.18.0.2"
VM = "blue1"


@dataclass
class Cluster:
    """The overlay, the CA of its agents' certificates, and host 1's agent, where the sites run VMs."""

    demo: OverlayDemo
    ca: CertificateAuthority
    host1: AgentProcess
    guest_image: GuestImage
    base: Path

    def ports(self) -> dict[str, vswitch_pb2.Port]:
        """Host 1's ports, asked as an admin."""
        listed = self.host1.stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=10)
        return {port.name: port for port in listed.ports}

    def client(
        self, stem: str, identity: tuple[Role, str], ca: CertificateAuthority | None = None
    ) -> TlsFiles:
        """A client certificate for a site (of this cluster's CA unless ``ca``); ``ca`` of the files
        is always this cluster's, which signed the agents' certificates."""
        issued = (ca or self.ca).issue(self.base / "pki", stem, stem, client=True, identity=identity)
        return TlsFiles(self.ca.path, issued.cert, issued.key)


@pytest.fixture(scope="module")
def cluster(guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("agent-tls")
    pki = base / "pki"
    ca = CertificateAuthority.create(pki)
    # The relays reach each agent at 127.0.0.1 in its namespace: its certificate names that.
    server = ca.issue(pki, "agent", "vswitch", dns=["localhost"], ips=["127.0.0.1"], server=True)
    admin = ca.issue(pki, "admin", "ops", client=True, identity=(Role.ADMIN, "ops"))
    agent_tls = AgentTls(server, ca.path, admin)
    options = {"pas": (PA1, PA2), "external_vms": frozenset({VM}), "agent_tls": agent_tls}
    with overlay_cluster(base / "overlay", **options) as (demo, _etcd):
        yield Cluster(demo, ca, demo.agent_of(PA1), guest_image, base)


@dataclass
class Site:
    process: ServiceProcess

    @property
    def vms(self) -> vm_pb2_grpc.VmServiceStub:
        return vm_pb2_grpc.VmServiceStub(grpc.insecure_channel(self.process.endpoint))

    def start_vm(self) -> vm_pb2.Vm:
        started: vm_pb2.Vm = self.vms.StartVm(vm_pb2.StartVmRequest(name=VM), timeout=60)
        return started

    def refused_start(self) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.start_vm()
        return caught.value

    def state(self) -> int:
        return int(self.vms.GetVm(vm_pb2.GetVmRequest(name=VM), timeout=10).state)


@pytest.fixture
def site(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[[TlsFiles], Site]]:
    """``site(tls)``: a started site process whose agent is host 1's, reached with ``tls``, with blue1
    defined (off) on a VHD of its own."""
    started: list[ServiceProcess] = []

    def make(tls: TlsFiles) -> Site:
        host1 = cluster.host1
        name = f"site{len(started)}"
        process = ServiceProcess(
            [
                *("--site-name", name, "--state-dir", str(tmp_path / name)),
                *("--guest-image", str(cluster.guest_image.kernel.parent), "--accel", "tcg"),
                *("--vm-netns", host1.host.netns, "--vswitch-endpoint", f"127.0.0.1:{host1.relay.port}"),
                *(
                    "--vswitch-ca",
                    str(tls.ca),
                    "--vswitch-cert",
                    str(tls.cert),
                    "--vswitch-key",
                    str(tls.key),
                ),
            ],
            free_port(),
            tmp_path / f"{name}.log",
        )
        started.append(process.start())
        blue1 = cluster.demo.vms[VM]
        disk = make_vm_disk(cluster.guest_image.rootfs, tmp_path / f"{name}.vhd", DISK_SIZE)
        definition = replica_pb2.VirtualMachine(
            name=VM,
            disks=[replica_pb2.VmDisk(name="d0", path=str(disk))],
            nics=[
                replica_pb2.VmNic(
                    mac=blue1.mac, vsid=blue1.vsid, addresses=[blue1.cidr], gateway=blue1.gateway
                )
            ],
        )
        result = Site(process)
        result.vms.CreateVm(vm_pb2.CreateVmRequest(vm=definition), timeout=10)
        return result

    try:
        yield make
    finally:
        for process in started:
            try:
                vms = vm_pb2_grpc.VmServiceStub(grpc.insecure_channel(process.endpoint))
                if vms.GetVm(vm_pb2.GetVmRequest(name=VM), timeout=10).state != vm_pb2.VM_STATE_OFF:
                    vms.StopVm(vm_pb2.StopVmRequest(name=VM, turn_off=True), timeout=30)
            except grpc.RpcError:
                pass  # a site that did not come up has no VM running
            process.stop()


def test_a_host_identity_of_its_own_host_attaches_the_vms_port(
    cluster: Cluster, site: Callable[[TlsFiles], Site]
) -> None:
    own = site(cluster.client("site-host1", (Role.HOST, cluster.host1.host.netns)))
    before = cluster.ports()
    started = own.start_vm()
    assert started.state == vm_pb2.VM_STATE_RUNNING
    # The port the site asked for over mutual TLS: a TAP_KERNEL port with the NIC's MAC and VSID,
    # made by the agent in its namespace, which qemu opens by name.
    (name,) = started.ports
    assert name not in before
    port = cluster.ports()[name]
    blue1 = cluster.demo.vms[VM]
    assert (port.backend, port.mac, port.vsid, port.vm_name) == (
        vswitch_pb2.PORT_BACKEND_TAP_KERNEL,
        blue1.mac,
        blue1.vsid,
        VM,
    )
    assert netns.link_exists(name, cluster.host1.host.netns)
    qemu = Path(f"/proc/{started.pid}/cmdline").read_bytes().split(b"\0")
    assert any(f"ifname={name},".encode() in arg for arg in qemu), qemu
    own.vms.StopVm(vm_pb2.StopVmRequest(name=VM, turn_off=True), timeout=30)
    assert own.state() == vm_pb2.VM_STATE_OFF
    # The removal detaches it, through the same certificate.
    own.vms.DeleteVm(vm_pb2.DeleteVmRequest(name=VM), timeout=30)
    assert name not in cluster.ports()


def test_another_hosts_identity_is_refused_by_role_and_nothing_is_attached(
    cluster: Cluster, site: Callable[[TlsFiles], Site]
) -> None:
    host2 = cluster.demo.agent_of(PA2).host.netns
    other = site(cluster.client("site-host2", (Role.HOST, host2)))
    before = cluster.ports()
    refused = other.refused_start()
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = str(refused.details())
    assert "refused this site's identity" in details
    assert f"host '{host2}'" in details
    assert "--vswitch-cert" in details
    assert cluster.ports() == before
    assert other.state() == vm_pb2.VM_STATE_OFF


def test_a_certificate_of_another_ca_is_refused_as_such_not_as_an_outage(
    cluster: Cluster, site: Callable[[TlsFiles], Site], tmp_path: Path
) -> None:
    stranger_ca = CertificateAuthority.create(tmp_path / "stranger", "Another CA")
    tls = cluster.client("site-stranger", (Role.HOST, cluster.host1.host.netns), ca=stranger_ca)
    stranger = site(tls)
    before = cluster.ports()
    refused = stranger.refused_start()
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = str(refused.details())
    assert "refused this site's certificate" in details
    assert str(tls.cert) in details
    assert "did not answer" not in details
    assert cluster.ports() == before
    assert stranger.state() == vm_pb2.VM_STATE_OFF
