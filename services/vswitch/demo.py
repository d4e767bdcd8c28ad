"""The overlay demo: hosts in network namespaces, each with a vswitch agent process, and VMs of two
tenants behind the agents' TAP ports, all driven through the policy service.

The end-to-end test and ``make run`` (``services/devstack.py``) build it. The policy service and etcd
run in the caller's namespace; each host namespace reaches etcd through a ``TcpRelay`` on its own
default etcd endpoint (127.0.0.1:2379), and the caller reaches each agent's gRPC API through a relay
to the agent's default address (127.0.0.1:50052). Each agent is its host's etcd user (docs/security.md),
added to etcd when its host is. Writes are idempotent (ALREADY_EXISTS is fine), so a rerun on the same
etcd works. ``demo_cluster`` runs the policy service here too (as its etcd user), for the tests and
benchmarks that need the whole tenant network.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from overland import defaults
from overland.config import TlsFiles
from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2, vswitch_pb2, vswitch_pb2_grpc
from services.common.config import ServerConfig
from services.common.errors import DeadlineExceeded, FailedPrecondition
from services.common.etcd_auth import POLICY_USER, host_user
from services.common.etcd_process import EtcdProcess
from services.policy import PolicyConfig, create_server
from services.vswitch.config import SNAPSHOT_DIR
from services.vswitch.datapath.switch import STATE_DIR
from services.vswitch.lab import BLUE, DEMO_SUBNETS, RED, Host, Lab, TcpRelay, VmSpec, demo_vms
from services.vswitch.netns import exec_argv

PAS = ("198.18.0.1", "198.18.0.2", "198.18.0.3")
AGENT_PORT = defaults.VSWITCH.port
ETCD_PORT_IN_HOST = int(defaults.ETCD_ENDPOINT.rpartition(":")[2])
# Fixed routing domain ids, so that reruns find what the first run created.
DEMO_RDIDS = {BLUE: "8f7e0a50-0000-4000-8000-00000000c0a1", RED: "8f7e0a50-0000-4000-8000-00000000fab1"}


class DemoError(FailedPrecondition):
    """A demo agent exited or did not come up."""


@dataclass(frozen=True)
class AgentTls:
    """The agents' mutual TLS: the server certificate every agent serves (it must name 127.0.0.1, where
    the relays reach it), the CA its callers' certificates must come from, and the certificate the
    demo itself calls with (an admin's)."""

    server: TlsFiles
    client_ca: Path
    caller: TlsFiles

    def flags(self) -> list[str]:
        return [
            *("--tls-cert", str(self.server.cert), "--tls-key", str(self.server.key)),
            *("--tls-client-ca", str(self.client_ca)),
        ]


@dataclass
class AgentProcess:
    """One host's agent: a ``python -m services.vswitch`` process inside the host namespace."""

    host: Host
    log: Path
    relay: TcpRelay
    # The agent's etcd flags (``EtcdProcess.flags``): the endpoint, TLS, its user and password file.
    etcd_flags: Sequence[str] = ()
    # Its API's mutual TLS, if it serves one: its flags, and the certificate ``stub`` calls with.
    tls: AgentTls | None = None
    process: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "services.vswitch",
            "--host-name", self.host.netns, "--pa-ip", self.host.pa_ip,
            *self.etcd_flags, "--etcd-timeout", "2",
            "--lease-ttl", "4", "--bind", f"127.0.0.1:{AGENT_PORT}",
            *(self.tls.flags() if self.tls else ()),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(exec_argv(self.host.netns, argv), stdout=log, stderr=log)
        address = f"127.0.0.1:{self.relay.port}"
        if self.tls is None:
            self.channel = grpc.insecure_channel(address)
        else:
            self.channel = grpc.secure_channel(address, self.tls.caller.credentials())

    @property
    def stub(self) -> vswitch_pb2_grpc.VswitchServiceStub:
        if self.channel is None:
            raise DemoError(f"agent {self.host.name} is not started")
        return vswitch_pb2_grpc.VswitchServiceStub(self.channel)

    def wait_applied(self, revision: int, timeout: float = 60.0) -> None:
        """Until the agent serves with its datapath and has applied ``revision``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise DemoError(f"agent {self.host.name} exited: {self.log_tail()}")
            try:
                status = self.stub.GetAgentStatus(vswitch_pb2.GetAgentStatusRequest(), timeout=2)
                if status.applied_revision >= revision and status.datapath:
                    return
            except grpc.RpcError:
                pass  # not serving yet: keep polling until the deadline
            time.sleep(0.2)
        raise DeadlineExceeded(f"agent {self.host.name} did not apply revision {revision}: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM (the agent stops gracefully; its TAPs and saved ports stay for a restart)."""
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

    def forget_state(self) -> None:
        """Remove the saved port list and table snapshot (the host is gone for good)."""
        Path(STATE_DIR, f"{self.host.netns}-{self.host.pa_ip}.ports").unlink(missing_ok=True)
        Path(SNAPSHOT_DIR, f"{self.host.netns}-{self.host.pa_ip}.table").unlink(missing_ok=True)


def _ignore_existing(call: grpc.UnaryUnaryMultiCallable, request: object) -> None:
    try:
        call(request, timeout=10)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


def record_of(spec: VmSpec, pa: str) -> types_pb2.LookupRecord:
    return types_pb2.LookupRecord(ca=spec.ca, vsid=spec.vsid, mac=spec.mac, pa=pa, vm_name=spec.name)


def write_table(
    policy: policy_pb2_grpc.PolicyServiceStub,
    hosts: Sequence[Host],
    vms: Mapping[str, VmSpec],
    rdids: Mapping[str, str],
) -> None:
    """Providers, both domains, the demo subnets and a record per VM, through the policy API."""
    for host in hosts:
        provider = types_pb2.ProviderAddress(host_name=host.netns, pa_ip=host.pa_ip, prefix_length=24)
        _ignore_existing(
            policy.CreateProviderAddress, policy_pb2.CreateProviderAddressRequest(provider_address=provider)
        )
    for name, tenant in ((BLUE, "blue"), (RED, "red")):
        domain = types_pb2.RoutingDomain(rdid=rdids[name], tenant_name=tenant)
        _ignore_existing(
            policy.CreateRoutingDomain, policy_pb2.CreateRoutingDomainRequest(routing_domain=domain)
        )
    for vsid, rdid, prefix, gateway_ip, gateway_mac in DEMO_SUBNETS:
        subnet = types_pb2.VirtualSubnet(
            vsid=vsid, rdid=rdids[rdid], ca_prefixes=[prefix], gateway_ip=gateway_ip, gateway_mac=gateway_mac
        )
        _ignore_existing(
            policy.CreateVirtualSubnet, policy_pb2.CreateVirtualSubnetRequest(virtual_subnet=subnet)
        )
    for spec in vms.values():
        request = policy_pb2.CreateLookupRecordRequest(lookup_record=record_of(spec, spec.pa))
        _ignore_existing(policy.CreateLookupRecord, request)


@dataclass
class OverlayDemo:
    """The running demo; ``close`` stops the agents and deletes every namespace it made."""

    policy: policy_pb2_grpc.PolicyServiceStub
    etcd: EtcdProcess
    log_dir: Path
    pas: Sequence[str] = PAS
    lab: Lab = field(default_factory=Lab)
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    vms: dict[str, VmSpec] = field(default_factory=dict)
    relays: list[TcpRelay] = field(default_factory=list)
    # VMs with a record but no namespace and no port: the caller runs them (qemu guests, say).
    external_vms: frozenset[str] = frozenset()
    # Where the policy service listens, for the callers that need its address (a site moving
    # records); the demo itself uses only ``policy``.
    policy_endpoint: str = ""
    # The agents serve their API over mutual TLS with these files; None: plaintext (on loopback).
    agent_tls: AgentTls | None = None

    def start(self) -> None:
        """Namespaces, relays, the table, one agent per host, then a TAP port per VM (but the
        ``external_vms``)."""
        try:
            hosts = [self.lab.add_host(f"h{index + 1}", pa) for index, pa in enumerate(self.pas)]
            self.vms = demo_vms(self.pas)
            namespaced = [spec for spec in self.vms.values() if spec.name not in self.external_vms]
            for spec in namespaced:
                self.lab.add_vm(spec.name, next(h for h in hosts if h.pa_ip == spec.pa))
            etcd_port = self.etcd.client_port
            for host in hosts:
                self.relays.append(TcpRelay(host.netns, ETCD_PORT_IN_HOST, None, ("127.0.0.1", etcd_port)))
                relay = TcpRelay(None, 0, host.netns, ("127.0.0.1", AGENT_PORT))
                self.relays.append(relay)
                flags = self.etcd.flags(host_user(host.netns), endpoint=f"127.0.0.1:{ETCD_PORT_IN_HOST}")
                self.agents[host.pa_ip] = AgentProcess(
                    host, self.log_dir / f"{host.name}.log", relay, flags, self.agent_tls
                )
            write_table(self.policy, hosts, self.vms, DEMO_RDIDS)
            revision = self.revision()
            for agent in self.agents.values():
                agent.start()
            for agent in self.agents.values():
                agent.wait_applied(revision)
            for spec in namespaced:
                self.attach(spec.name, spec.pa, f"tap-{spec.name}")
                self.configure(spec.name, f"tap-{spec.name}")
        except BaseException:
            self.close()
            raise

    def revision(self) -> int:
        return self.policy.GetTableStatus(policy_pb2.GetTableStatusRequest(), timeout=5).revision

    def agent_of(self, pa: str) -> AgentProcess:
        return self.agents[pa]

    def attach(self, vm: str, pa: str, port_name: str) -> None:
        """Plug VM ``vm``'s NIC into host ``pa``'s switch as TAP ``port_name`` (in the VM's namespace)."""
        spec = self.vms[vm]
        port = vswitch_pb2.Port(name=port_name, mac=spec.mac, vsid=spec.vsid, netns=self.lab.vms[vm].netns)
        self.agent_of(pa).stub.AttachPort(vswitch_pb2.AttachPortRequest(port=port), timeout=30)

    def configure(self, vm: str, port_name: str) -> None:
        spec = self.vms[vm]
        self.lab.configure_vm(self.lab.vms[vm], port_name, spec.cidr, spec.gateway)

    def ping(self, vm: str, destination: str, count: int = 2, wait: float = 1.0) -> bool:
        return self.lab.ping(self.lab.vms[vm], destination, count=count, wait=wait)

    def banner(self) -> list[str]:
        """What to try, for ``make run``."""
        blue1, red1 = self.lab.vms["blue1"].netns, self.lab.vms["red1"].netns
        return [
            "vswitch demo: tenants blue and red both use 192.0.2.0/24 on three hosts",
            f"  ip netns exec {blue1} ping 192.0.2.12      # blue1 -> blue2 on another host",
            f"  ip netns exec {blue1} ping 198.51.100.13   # routed to blue's second subnet",
            f"  ip netns exec {red1} ping 192.0.2.11       # red's own .11, never blue's",
        ]

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
            agent.forget_state()
        for relay in self.relays:
            relay.close()
        self.relays.clear()
        self.lab.close()


@contextmanager
def demo_cluster(workdir: Path, etcd: EtcdProcess, **demo_options: Any) -> Iterator[OverlayDemo]:
    """The policy service (in this process, as its etcd user) on ``etcd`` and a started
    ``OverlayDemo(**demo_options)`` logging to ``workdir``; both stopped after. The tests' overlay and
    the benchmarks that need the tenant network run it."""
    policy_server, port = create_server(
        PolicyConfig(
            server=ServerConfig(bind="127.0.0.1:0", max_workers=8),
            etcd=etcd.etcd_config(POLICY_USER, timeout=2.0),
        )
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    demo = None
    try:
        demo = OverlayDemo(
            policy_pb2_grpc.PolicyServiceStub(channel),
            etcd,
            workdir,
            policy_endpoint=f"127.0.0.1:{port}",
            **demo_options,
        )
        demo.start()
        yield demo
    finally:
        if demo is not None:
            demo.close()
        channel.close()
        policy_server.stop()
