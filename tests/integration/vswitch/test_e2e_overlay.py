"""End to end (issue 3): real etcd, the policy service, and a vswitch agent process in each of three
host namespaces (PAs 198.18.0.1-3), VMs in their own namespaces behind the agents' TAP ports.

Two tenants in different routing domains both use 192.0.2.0/24; blue has a second subnet
198.51.100.0/24. Checks: ping inside a tenant across hosts, isolation across tenants even on the same
IP, routing between blue's subnets, a live migration (PA update) that keeps ping working, forwarding
while etcd is unreachable, and an agent restart that loses little traffic (measured and printed).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2, vswitch_pb2, vswitch_pb2_grpc
from services.common.etcd_kv import EtcdConfig
from services.common.etcd_process import EtcdProcess
from services.common.server import ServerConfig
from services.policy import PolicyConfig, create_server
from services.vswitch.datapath.datapath import STATE_DIR
from services.vswitch.lab import BLUE, DEMO_SUBNETS, RED, Host, Lab, TcpRelay, VmSpec, demo_vms
from services.vswitch.netns import exec_argv
from tests.conftest import start_test_etcd

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

PAS = ("198.18.0.1", "198.18.0.2", "198.18.0.3")
AGENT_PORT = 50062
ETCD_PORT_IN_HOST = 2379
READY_SECONDS = 60.0


@dataclass
class AgentProcess:
    """One host's agent: a ``python -m services.vswitch`` process inside the host namespace."""

    host: Host
    log: Path
    relay: TcpRelay
    process: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "services.vswitch",
            "--host-name", self.host.netns, "--pa-ip", self.host.pa_ip,
            "--etcd", f"127.0.0.1:{ETCD_PORT_IN_HOST}", "--etcd-timeout", "2",
            "--lease-ttl", "4", "--bind", f"127.0.0.1:{AGENT_PORT}",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(exec_argv(self.host.netns, argv), stdout=log, stderr=log)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.relay.port}")

    @property
    def stub(self) -> vswitch_pb2_grpc.VswitchServiceStub:
        assert self.channel is not None
        return vswitch_pb2_grpc.VswitchServiceStub(self.channel)

    def wait_applied(self, revision: int) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                status = self.stub.GetAgentStatus(vswitch_pb2.GetAgentStatusRequest(), timeout=2)
                if status.applied_revision >= revision and status.datapath:
                    return
            except grpc.RpcError:
                pass  # not serving yet
            time.sleep(0.2)
        raise AssertionError(
            f"agent {self.host.name} did not apply revision {revision}: {self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class Cluster:
    lab: Lab
    etcd: EtcdProcess
    policy: policy_pb2_grpc.PolicyServiceStub
    agents: dict[str, AgentProcess]
    vms: dict[str, VmSpec]
    rdids: dict[str, str] = field(default_factory=dict)

    def agent_of(self, pa: str) -> AgentProcess:
        return self.agents[pa]

    def revision(self) -> int:
        return self.policy.GetTableStatus(policy_pb2.GetTableStatusRequest(), timeout=5).revision

    def ping(self, vm: str, destination: str, count: int = 2) -> bool:
        return self.lab.ping(self.lab.vms[vm], destination, count=count)

    def attach(self, vm: str, pa: str, port_name: str) -> None:
        spec = self.vms[vm]
        port = vswitch_pb2.Port(name=port_name, mac=spec.mac, vsid=spec.vsid, netns=self.lab.vms[vm].netns)
        self.agent_of(pa).stub.AttachPort(vswitch_pb2.AttachPortRequest(port=port), timeout=30)

    def configure(self, vm: str, port_name: str) -> None:
        spec = self.vms[vm]
        self.lab.configure_vm(self.lab.vms[vm], port_name, spec.cidr, spec.gateway)


def write_table(
    policy: policy_pb2_grpc.PolicyServiceStub, lab: Lab, vms: dict[str, VmSpec]
) -> dict[str, str]:
    """The demo tenancy through the policy API; returns the generated rdids by demo name."""
    for host in lab.hosts.values():
        policy.CreateProviderAddress(
            policy_pb2.CreateProviderAddressRequest(
                provider_address=types_pb2.ProviderAddress(
                    host_name=host.netns, pa_ip=host.pa_ip, prefix_length=24
                )
            ),
            timeout=10,
        )
    rdids = {}
    for name, tenant in ((BLUE, "blue"), (RED, "red")):
        domain = policy.CreateRoutingDomain(
            policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name=tenant)),
            timeout=10,
        )
        rdids[name] = domain.rdid
    for vsid, rdid, prefix, gateway_ip, gateway_mac in DEMO_SUBNETS:
        subnet = types_pb2.VirtualSubnet(
            vsid=vsid, rdid=rdids[rdid], ca_prefixes=[prefix], gateway_ip=gateway_ip, gateway_mac=gateway_mac
        )
        policy.CreateVirtualSubnet(policy_pb2.CreateVirtualSubnetRequest(virtual_subnet=subnet), timeout=10)
    for spec in vms.values():
        record = types_pb2.LookupRecord(
            ca=spec.ca, vsid=spec.vsid, mac=spec.mac, pa=spec.pa, vm_name=spec.name
        )
        policy.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=record), timeout=10)
    return rdids


def record_of(spec: VmSpec, pa: str) -> types_pb2.LookupRecord:
    return types_pb2.LookupRecord(ca=spec.ca, vsid=spec.vsid, mac=spec.mac, pa=pa, vm_name=spec.name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("e2e")
    etcd = start_test_etcd(workdir / "etcd")
    lab = Lab()
    relays: list[TcpRelay] = []
    agents: dict[str, AgentProcess] = {}
    policy_server = None
    channel = None
    try:
        policy_server, port = create_server(
            PolicyConfig(
                server=ServerConfig(bind="127.0.0.1:0", max_workers=8),
                etcd=EtcdConfig(endpoints=(etcd.endpoint,), timeout=2.0),
            )
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        policy = policy_pb2_grpc.PolicyServiceStub(channel)
        hosts = [lab.add_host(f"h{index + 1}", pa) for index, pa in enumerate(PAS)]
        vms = demo_vms(PAS)
        for spec in vms.values():
            lab.add_vm(spec.name, next(h for h in hosts if h.pa_ip == spec.pa))
        etcd_port = int(etcd.endpoint.rsplit(":", 1)[1])
        for host in hosts:
            relays.append(TcpRelay(host.netns, ETCD_PORT_IN_HOST, None, ("127.0.0.1", etcd_port)))
            relay = TcpRelay(None, 0, host.netns, ("127.0.0.1", AGENT_PORT))
            relays.append(relay)
            agents[host.pa_ip] = AgentProcess(host, workdir / f"{host.name}.log", relay)
        rdids = write_table(policy, lab, vms)
        built = Cluster(lab, etcd, policy, agents, vms, rdids)
        revision = built.revision()
        for agent in agents.values():
            agent.start()
        for agent in agents.values():
            agent.wait_applied(revision)
        for spec in vms.values():
            built.attach(spec.name, spec.pa, f"tap-{spec.name}")
            built.configure(spec.name, f"tap-{spec.name}")
        yield built
    finally:
        for agent in agents.values():
            agent.stop()
            Path(STATE_DIR, f"{agent.host.netns}-{agent.host.pa_ip}.ports").unlink(missing_ok=True)
        for relay in relays:
            relay.close()
        if channel is not None:
            channel.close()
        if policy_server is not None:
            policy_server.stop()
        lab.close()
        etcd.close()


def neighbour_mac(cluster: Cluster, vm: str, ip: str) -> str:
    return cluster.lab.run(cluster.lab.vms[vm].netns, ["ip", "neigh", "show", ip]).stdout


def test_ping_works_inside_a_tenant_across_hosts(cluster: Cluster) -> None:
    assert cluster.ping("blue1", "192.0.2.12")  # host1 -> host2
    assert cluster.ping("red1", "192.0.2.11")  # host1 -> host3, red's own .11
    assert cluster.vms["red2"].mac in neighbour_mac(cluster, "red1", "192.0.2.11")


def test_tenants_never_meet_even_on_the_same_ip(cluster: Cluster) -> None:
    # red1 (192.0.2.12) shares host1 with blue1; blue1's 192.0.2.12 is blue2 on host2.
    assert cluster.ping("blue1", "192.0.2.12")
    assert cluster.vms["blue2"].mac in neighbour_mac(cluster, "blue1", "192.0.2.12")
    assert cluster.vms["red1"].mac not in neighbour_mac(cluster, "blue1", "192.0.2.12")
    # Red has no route to blue's second subnet.
    assert not cluster.lab.ping(cluster.lab.vms["red1"], "198.51.100.13", count=1, wait=0.5)
    counters = cluster.agent_of(PAS[0]).stub.GetCounters(vswitch_pb2.GetCountersRequest(), timeout=5)
    assert counters.drops["no_route"] >= 1


def test_routing_between_the_subnets_of_one_tenant(cluster: Cluster) -> None:
    assert cluster.ping("blue1", "198.51.100.13")  # host1, subnet A -> host3, subnet B
    reply = cluster.lab.run(
        cluster.lab.vms["blue3"].netns, ["ping", "-n", "-c", "1", "-W", "2", "192.0.2.11"]
    )
    assert "ttl=63" in reply.stdout


def test_forwarding_goes_on_while_etcd_is_unreachable(cluster: Cluster) -> None:
    cluster.etcd.pause()
    try:
        assert cluster.ping("blue1", "192.0.2.12", count=3)
        assert cluster.ping("blue1", "198.51.100.13", count=2)
    finally:
        cluster.etcd.resume()


def test_a_migrated_vm_is_reachable_soon_after_the_pa_update(cluster: Cluster) -> None:
    """blue2 moves from host2 to host3: its new NIC is plugged on host3, then the PA update is written."""
    old_pa, new_pa = PAS[1], PAS[2]
    spec = cluster.vms["blue2"]
    cluster.attach("blue2", new_pa, "tap-blue2m")
    cluster.agent_of(old_pa).stub.DetachPort(vswitch_pb2.DetachPortRequest(name="tap-blue2"), timeout=10)
    cluster.configure("blue2", "tap-blue2m")
    record = record_of(spec, new_pa)
    written = time.monotonic()
    cluster.policy.UpdateLookupRecord(policy_pb2.UpdateLookupRecordRequest(lookup_record=record), timeout=10)
    reachable = None
    while time.monotonic() - written < 15:
        if cluster.lab.ping(cluster.lab.vms["blue1"], spec.ca, count=1, wait=0.2):
            reachable = time.monotonic() - written
            break
    print(f"\nmigration: blue2 reachable {reachable:.3f} s after the PA update" if reachable else "")
    assert reachable is not None
    assert cluster.ping("blue3", "192.0.2.12")  # routed to its new host too


def reply_times(ping_output: str) -> list[float]:
    """The ``-D`` timestamps of the echo replies in ping's output."""
    return [float(line[1 : line.index("]")]) for line in ping_output.splitlines() if "bytes from" in line]


def test_an_agent_restart_loses_little_traffic(cluster: Cluster) -> None:
    agent = cluster.agent_of(PAS[0])
    # Pinged from host3 to blue1 on host1: the pinging VM's own NIC never goes down, so the gap in
    # replies is the restarted host's forwarding outage, not ping backing off from send errors.
    argv = ["ping", "-n", "-D", "-i", "0.05", "-W", "1", "-w", "14", "192.0.2.11"]
    pinger = subprocess.Popen(
        exec_argv(cluster.lab.vms["blue3"].netns, argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        time.sleep(1.5)
        restarted = time.monotonic()
        agent.stop()
        agent.start()
        agent.wait_applied(cluster.revision())
        restart_seconds = time.monotonic() - restarted
        output, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    times = reply_times(output)
    gap = max(later - earlier for earlier, later in itertools.pairwise(times))
    print(f"\nagent restart: served again after {restart_seconds:.2f} s; longest gap in replies {gap:.2f} s")
    ports = agent.stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=5).ports
    assert {p.name for p in ports} >= {"tap-blue1", "tap-red1"}  # re-opened from the saved list
    assert times[-1] - times[0] > restart_seconds  # replies before and after the restart
    assert cluster.ping("blue1", "198.51.100.13")
    assert cluster.ping("red1", "192.0.2.11")
