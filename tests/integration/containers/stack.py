"""Overland service containers on the etcd cluster, and the invariants checked after every scenario.

All services run from the one ``overland/overland`` image (``overland-service policy|vswitch ...``) on
the cluster's private network, naming etcd members by alias; their gRPC ports are published on fixed
127.0.0.1 ports so host clients keep one address across container restarts. As deployed
(docs/security.md), each serves mutual TLS only and reaches etcd over TLS as its own etcd user (each
agent as its host's).

Invariants:
- the store keeps the key schema's rules (no duplicate CA in a VSID, MAC index consistent, every
  record's PA registered; ``check_invariants`` of the policy tests);
- each agent's ``DumpTable`` equals the store read at the agent's applied revision, decoded and built
  into a table by the same pure ``RoutingTable`` the agent uses.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker
import grpc
from docker.models.containers import Container
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testcontainers.core.network import Network as TestNetwork

from overland import defaults
from overland.v1 import policy_pb2_grpc, types_pb2, vswitch_pb2, vswitch_pb2_grpc
from services.common.etcd_auth import POLICY_USER, host_user
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import free_ports
from services.common.kv import KeyValue
from services.common.schema import decode_snapshot, keys
from services.common.table import RoutingTable
from services.vswitch.watcher import watch_prefixes
from tests.integration.containers.harness import (
    READY_TIMEOUT_SECONDS,
    EtcdCluster,
    start_container,
    wait_until,
)
from tests.integration.containers.security import SuiteSecurity
from tests.unit.policy.support import PA_1, PA_2, check_invariants

POLICY_PORT = defaults.POLICY.port
AGENT_PORT = defaults.VSWITCH.port
# The agents' host names (and container aliases); each is its own etcd user (security.py).
AGENT_HOSTS = ("host0", "host1")
# The services' etcd deadline: short, so failover is quick, and every etcd call is bounded by it.
SERVICE_ETCD_TIMEOUT_SECONDS = 2.0
# gRPC deadline of the suite's calls to the services: far above what a bounded service may take, so a
# call that reaches it means the service hung.
CALL_TIMEOUT_SECONDS = 30.0
# DumpTable field for each StoreEntry resource.
DUMP_FIELDS = {
    "routing_domain": "routing_domains",
    "virtual_subnet": "virtual_subnets",
    "provider_address": "provider_addresses",
    "lookup_record": "lookup_records",
    "customer_route": "customer_routes",
}


@dataclass
class ServiceContainer:
    """One service container: its published gRPC port and a channel to it from the host."""

    name: str
    host_port: int
    container: Container
    # The suite's side of the service's mutual TLS.
    credentials: grpc.ChannelCredentials
    # Host ports of the container's other published ports, by container port.
    published: dict[int, int] = field(default_factory=dict)
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.secure_channel(f"127.0.0.1:{self.host_port}", self.credentials)

    def serving(self) -> bool:
        self.container.reload()
        if self.container.status == "exited":
            logs = self.container.logs(tail=40).decode(errors="replace")
            raise AssertionError(f"service container {self.name} exited:\n{logs}")
        response = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_serving(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        wait_until(f"{self.name} serving", self.serving, timeout)

    def kill(self) -> None:
        self.container.kill()
        self.container.wait(timeout=30)

    def stop(self) -> None:
        self.container.stop(timeout=10)

    def start(self) -> None:
        self.container.start()
        self.wait_serving()

    def close(self) -> None:
        self.channel.close()


def start_service(
    image: str,
    network: TestNetwork,
    prefix: str,
    name: str,
    port: int,
    command: Sequence[str],
    security: SuiteSecurity,
    *,
    extra_ports: Sequence[int] = (),
    shared_dirs: Sequence[Path] = (),
) -> ServiceContainer:
    """Start ``overland-service <command> --tls-...`` (see ``start_container``; mutual TLS with the
    certificate of ``name``) and wait until it serves gRPC on ``port``; ``extra_ports`` are published
    too."""
    host_ports = free_ports(1 + len(extra_ports))
    published = dict(zip((port, *extra_ports), host_ports, strict=True))
    command = [*command, *security.server_flags(name)]
    shared = [*shared_dirs, security.directory]
    container = start_container(image, network, prefix, name, command, published, shared)
    service = ServiceContainer(name, host_ports[0], container, security.channel_credentials())
    service.published = dict(zip(extra_ports, host_ports[1:], strict=True))
    service.wait_serving()
    return service


@dataclass
class Agent:
    """A vswitch agent container in table-only mode."""

    service: ServiceContainer
    pa_ip: str

    @property
    def stub(self) -> vswitch_pb2_grpc.VswitchServiceStub:
        return vswitch_pb2_grpc.VswitchServiceStub(self.service.channel)

    def status(self) -> vswitch_pb2.AgentStatus:
        return self.stub.GetAgentStatus(vswitch_pb2.GetAgentStatusRequest(), timeout=CALL_TIMEOUT_SECONDS)

    def dump(self) -> vswitch_pb2.DumpTableResponse:
        return self.stub.DumpTable(vswitch_pb2.DumpTableRequest(), timeout=CALL_TIMEOUT_SECONDS)


@dataclass
class OverlandStack:
    """The policy service and two agents, on an etcd cluster; ``kv`` reads the store from the host."""

    cluster: EtcdCluster
    image: str
    prefix: str
    policy: ServiceContainer | None = None
    agents: list[Agent] = field(default_factory=list)
    kv: EtcdKV | None = None

    def start(self) -> OverlandStack:
        network = self.cluster.network
        members = self.cluster.in_network_endpoints

        def rotated(first: int) -> str:
            # Each client starts on a different member, so any member's failure is some client's first.
            return ",".join(members[first:] + members[:first])

        security = self.cluster.security
        etcd_flags = ["--etcd-timeout", str(SERVICE_ETCD_TIMEOUT_SECONDS)]
        policy = ["policy", "--bind", f"0.0.0.0:{POLICY_PORT}", "--etcd", rotated(0), *etcd_flags]
        self.policy = start_service(
            self.image,
            network,
            self.prefix,
            "policy",
            POLICY_PORT,
            [*policy, *security.etcd_flags(POLICY_USER)],
            security,
        )
        for index, (host, pa_ip) in enumerate(zip(AGENT_HOSTS, (PA_1, PA_2), strict=True)):
            command = [
                "vswitch",
                "--table-only",
                "--host-name",
                host,
                "--pa-ip",
                pa_ip,
                "--etcd",
                rotated(index + 1),
            ]
            command += [*etcd_flags, *security.etcd_flags(host_user(host)), "--bind", f"0.0.0.0:{AGENT_PORT}"]
            self.agents.append(
                Agent(
                    start_service(self.image, network, self.prefix, host, AGENT_PORT, command, security),
                    pa_ip,
                )
            )
        self.kv = self.cluster.kv(deadline=SERVICE_ETCD_TIMEOUT_SECONDS)
        return self

    @property
    def policy_stub(self) -> policy_pb2_grpc.PolicyServiceStub:
        assert self.policy is not None
        return policy_pb2_grpc.PolicyServiceStub(self.policy.channel)

    @property
    def store(self) -> EtcdKV:
        assert self.kv is not None
        return self.kv

    def table_revision(self) -> int:
        """The newest revision that changed anything an agent watches (host status writes do not)."""
        newest = 0
        for prefix in watch_prefixes():
            result = self.store.range(prefix, keys_only=True)
            newest = max([newest, *(kv.mod_revision for kv in result.kvs)])
        return newest

    def wait_applied(self, what: str = "", timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until every agent has applied the newest table write."""
        target = self.table_revision()
        for agent in self.agents:

            def applied(agent: Agent = agent) -> bool:
                return agent.status().applied_revision >= target

            wait_until(f"{agent.service.name} to apply revision {target} {what}".strip(), applied, timeout)

    def check(self) -> int:
        """Assert every invariant on the store and on each agent's copy; the number of records."""
        records = check_invariants(self.store)
        self.wait_applied()
        for agent in self.agents:
            assert_agent_matches_store(agent, self.store)
        return records

    def close(self) -> None:
        if self.kv is not None:
            self.kv.close()
        for service in [*([self.policy] if self.policy else []), *(a.service for a in self.agents)]:
            service.close()
            with contextlib.suppress(docker.errors.APIError):
                service.container.remove(force=True, v=True)


def canonical(messages: Iterable[tuple[str, Message]]) -> Counter[tuple[str, bytes]]:
    return Counter((kind, message.SerializeToString(deterministic=True)) for kind, message in messages)


def read_watched(kv: EtcdKV, revision: int) -> tuple[list[KeyValue], int]:
    """The watched prefixes read at one revision (0: the newest), and that revision."""
    pairs: list[KeyValue] = []
    for prefix in watch_prefixes():
        result = kv.range(prefix, revision=revision)
        pairs += result.kvs
        revision = result.revision
    return pairs, revision


def store_view(kv: EtcdKV, applied: int) -> Counter[tuple[str, bytes]]:
    """What an agent's table must hold at revision ``applied``. Compaction may already have removed
    that revision (host status writes move the store past it); when no table write happened since
    (every policy write, deletes included, moves the table-revision marker), the newest state is the
    same table, so it is read instead."""
    marker = kv.get(keys.TABLE_REVISION_KEY)
    pairs, revision = read_watched(kv, 0)
    if (marker is not None and marker.mod_revision > applied) or any(p.mod_revision > applied for p in pairs):
        pairs, revision = read_watched(kv, applied)
    snapshot: dict[bytes, types_pb2.StoreEntry] = decode_snapshot(pairs)
    table = RoutingTable()
    table.reset(snapshot, revision)
    entries = table.entries().values()
    return canonical(
        (kind, getattr(entry, kind))
        for entry in entries
        if (kind := entry.WhichOneof("resource")) is not None
    )


def dump_view(dump: vswitch_pb2.DumpTableResponse) -> Counter[tuple[str, bytes]]:
    return canonical((kind, message) for kind, name in DUMP_FIELDS.items() for message in getattr(dump, name))


def assert_agent_matches_store(agent: Agent, kv: EtcdKV) -> None:
    dump = agent.dump()
    expected = store_view(kv, dump.applied_revision)
    actual = dump_view(dump)
    assert sum(actual.values()) > 0, f"{agent.service.name} has an empty table"
    missing, extra = expected - actual, actual - expected
    assert (missing, extra) == (Counter(), Counter()), (
        f"{agent.service.name} at revision {dump.applied_revision}: "
        f"{sum(missing.values())} entries missing, {sum(extra.values())} not in the store"
    )
