"""The container suite's harness: a 3-member etcd cluster in Docker, fault injection, timing records.

The cluster runs the ``overland/etcd`` image on a private Docker network; members find each other by
network alias (``etcd-0`` ...) through a static ``--initial-cluster``. Each member's client port is
published on a fixed 127.0.0.1 port, so host clients keep one endpoint list across member restarts,
the way a deployment's clients do. As deployed (docs/security.md), clients and peers speak TLS with
client certificates, and once the cluster is up it gets Overland's etcd users and authentication
(``security.SuiteSecurity``).

Faults are the ones operators meet: a member killed (SIGKILL) or stopped, paused (cgroup freezer),
cut off its network (``docker network disconnect``), and the whole cluster restarted.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import etcd3
import grpc
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network as TestNetwork

from services.common.errors import ServiceError
from services.common.etcd_auth import ROOT_USER, EtcdAccess, access_plan, hosts_of
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import free_ports
from services.common.kv import Compare, Put
from tests.integration.containers.security import SuiteSecurity

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
# etcd's defaults; the election bound the scenarios check derives from them.
HEARTBEAT_MS = 100
ELECTION_TIMEOUT_MS = 1000
# A short client deadline keeps failover quick; a call must never outlive it by more than the slack.
CLIENT_DEADLINE_SECONDS = 2.0
DEADLINE_SLACK_SECONDS = 1.5
READY_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.1
LABEL = "org.overland.test"


def etcd_client(
    endpoint: str, timeout: float, credentials: grpc.ChannelCredentials
) -> etcd3.MultiEndpointEtcd3Client:
    """A python-etcd3 client on one endpoint that may be retried right after a failure.

    The library's default shuns a failed endpoint for five minutes, which would turn a member restart
    into a five-minute outage for the test. It is root by its certificate's CN (security.py).
    """
    host, port = endpoint.rsplit(":", 1)
    return etcd3.MultiEndpointEtcd3Client(
        endpoints=[etcd3.Endpoint(host, int(port), secure=True, creds=credentials, time_retry=0)],
        timeout=timeout,
    )


def wait_until(what: str, predicate: Callable[[], T | None], timeout: float) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except (grpc.RpcError, etcd3.exceptions.Etcd3Exception, docker.errors.APIError) as error:
            last_error = error
        else:
            if result:
                return result
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


def start_container(
    image: str,
    network: TestNetwork,
    prefix: str,
    name: str,
    command: Sequence[str],
    published: Mapping[int, int],
    shared_dirs: Sequence[Path] = (),
) -> Container:
    """Start a container of this run named by ``name`` on ``network`` (also its alias and host name).

    Ports are published on loopback only, each on the host port given, fixed for the container's life
    so clients keep their address across restarts; ``shared_dirs`` are mounted at the same path."""
    container = (
        DockerContainer(image)
        .with_name(f"{prefix}-{name}")
        .with_network(network)
        .with_network_aliases(name)
        .with_kwargs(labels={LABEL: prefix}, hostname=name)
        .with_command(list(command))
    )
    for directory in shared_dirs:
        container.with_volume_mapping(str(directory), str(directory), "rw")
    for container_port, host_port in published.items():
        # Docker binds (address, port); testcontainers' annotation knows only a bare port.
        container.ports[f"{container_port}/tcp"] = ("127.0.0.1", host_port)  # type: ignore[assignment]
    container.start()
    return container.get_wrapped_container()


@dataclass
class Member:
    """One etcd member: its container, alias on the cluster network and published client port."""

    name: str
    host_port: int
    container: Container
    security: SuiteSecurity

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.host_port}"

    def client(self, timeout: float = CLIENT_DEADLINE_SECONDS) -> etcd3.MultiEndpointEtcd3Client:
        return etcd_client(self.endpoint, timeout, self.security.admin_credentials())

    def state(self) -> str:
        self.container.reload()
        return str(self.container.status)

    def answers(self, client: etcd3.MultiEndpointEtcd3Client) -> bool:
        """Whether a linearizable read succeeds; an exited member fails the test with its log."""
        if self.state() == "exited":
            raise AssertionError(f"etcd member {self.name} exited:\n{self.logs()}")
        client.get("health")
        return True

    def logs(self) -> str:
        return self.container.logs(tail=40).decode(errors="replace")


@dataclass
class EtcdCluster:
    """A running 3-member etcd cluster; ``start()`` returns once every member answers and a leader exists."""

    network: TestNetwork
    image: str
    prefix: str
    security: SuiteSecurity
    size: int = 3
    members: list[Member] = field(default_factory=list)

    def start(self) -> EtcdCluster:
        token = f"{self.prefix}-cluster"
        names = [f"etcd-{i}" for i in range(self.size)]
        initial = ",".join(f"{n}=https://{n}:{ETCD_PEER_PORT}" for n in names)
        tls = self.security.etcd_server
        for name, host_port in zip(names, free_ports(self.size), strict=True):
            command = [
                f"--name={name}",
                "--data-dir=/var/lib/etcd",
                f"--listen-client-urls=https://0.0.0.0:{ETCD_CLIENT_PORT}",
                f"--advertise-client-urls=https://{name}:{ETCD_CLIENT_PORT}",
                f"--listen-peer-urls=https://0.0.0.0:{ETCD_PEER_PORT}",
                f"--initial-advertise-peer-urls=https://{name}:{ETCD_PEER_PORT}",
                *(f"--cert-file={tls.cert}", f"--key-file={tls.key}", f"--trusted-ca-file={tls.ca}"),
                *(
                    f"--peer-cert-file={tls.cert}",
                    f"--peer-key-file={tls.key}",
                    f"--peer-trusted-ca-file={tls.ca}",
                ),
                "--client-cert-auth=true",
                "--peer-client-cert-auth=true",
                # The cheapest password hashing: the suite authenticates often and guards nothing.
                "--bcrypt-cost=4",
                f"--initial-cluster={initial}",
                f"--initial-cluster-token={token}",
                "--initial-cluster-state=new",
                f"--heartbeat-interval={HEARTBEAT_MS}",
                f"--election-timeout={ELECTION_TIMEOUT_MS}",
                # Durability against power loss is not what these tests are about; fsync on a shared
                # 2-core box only makes elections flaky.
                "--unsafe-no-fsync",
                "--experimental-watch-progress-notify-interval=200ms",
                "--log-level=warn",
            ]
            container = start_container(
                self.image,
                self.network,
                self.prefix,
                name,
                command,
                {ETCD_CLIENT_PORT: host_port},
                [self.security.directory],
            )
            self.members.append(Member(name, host_port, container, self.security))
        self.wait_healthy()
        passwords = self.security.passwords()
        root = self.security.etcd_config(self.endpoints, ROOT_USER, CLIENT_DEADLINE_SECONDS)
        EtcdAccess(root).apply(access_plan(hosts_of(passwords)), passwords)
        return self

    def kv(self, endpoints: Sequence[str] | None = None, deadline: float = CLIENT_DEADLINE_SECONDS) -> EtcdKV:
        """The services' own etcd client on ``endpoints`` (default: every member), as root: it starts
        on the first and moves on when one fails."""
        config = self.security.etcd_config(list(endpoints or self.endpoints), ROOT_USER, deadline)
        return EtcdKV.from_config(config)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def in_network_endpoints(self) -> list[str]:
        """Endpoints as containers on the cluster network reach them."""
        return [f"{m.name}:{ETCD_CLIENT_PORT}" for m in self.members]

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def wait_healthy(
        self, members: Sequence[Member] | None = None, timeout: float = READY_TIMEOUT_SECONDS
    ) -> None:
        """Every given member (default all) answers a linearizable read: it is in a quorum with a leader."""
        for member in members or self.members:
            with contextlib.closing(member.client()) as client:
                wait_until(f"{member.name} healthy", functools.partial(member.answers, client), timeout)

    def leader(self, among: Sequence[Member] | None = None) -> Member:
        """The member the reachable ones agree is leader."""

        def find() -> Member | None:
            for member in among or self.members:
                with (
                    contextlib.closing(member.client()) as client,
                    contextlib.suppress(grpc.RpcError, etcd3.exceptions.Etcd3Exception),
                ):
                    name = client.status().leader.name
                    return self.member(name) if name else None
            return None

        return wait_until("an etcd leader", find, READY_TIMEOUT_SECONDS)

    def revisions(self, members: Sequence[Member] | None = None) -> dict[str, int]:
        """Each member's own store revision (a serializable read answers from the member's local copy)."""
        found = {}
        for member in members or self.members:
            with contextlib.closing(member.client()) as client:
                _, header = _serializable_header(client)
                found[member.name] = header
        return found

    def wait_converged(self, timeout: float = READY_TIMEOUT_SECONDS) -> int:
        """Wait until every member reports the same revision; return it."""

        def same() -> int | None:
            revisions = set(self.revisions().values())
            return revisions.pop() if len(revisions) == 1 else None

        return wait_until("etcd members at one revision", same, timeout)

    def kill(self, member: Member) -> None:
        member.container.kill()
        member.container.wait(timeout=30)

    def start_member(self, member: Member) -> None:
        member.container.start()

    def pause(self, member: Member) -> None:
        member.container.pause()

    def unpause(self, member: Member) -> None:
        member.container.unpause()

    def disconnect(self, member: Member) -> None:
        docker_network(self.network, member.container).disconnect(member.container)

    def reconnect(self, member: Member) -> None:
        docker_network(self.network, member.container).connect(member.container, aliases=[member.name])

    def restart_all(self) -> None:
        """Stop every member gracefully, then start them all again on the same data."""
        for member in self.members:
            member.container.stop(timeout=10)
        for member in self.members:
            member.container.start()
        self.wait_healthy()

    def close(self) -> None:
        for member in self.members:
            with contextlib.suppress(docker.errors.APIError):
                member.container.remove(force=True, v=True)


def docker_network(network: TestNetwork, container: Container) -> Any:
    """The docker SDK object of a testcontainers network (which has no public disconnect)."""
    return container.client.networks.get(network.name)


def _serializable_header(client: etcd3.MultiEndpointEtcd3Client) -> tuple[Any, int]:
    # python-etcd3 hides the range header; its request builder and stub give it back.
    request = client._build_get_range_request(b"\0", serializable=True)
    response = client.kvstub.Range(request, client.timeout)
    return response, int(response.header.revision)


@dataclass
class CallRecord:
    """One client call: when it started, how long it took, whether it succeeded, through which endpoint."""

    started: float
    seconds: float
    ok: bool
    endpoint: str
    error: str = ""


def key_writer(kv: EtcdKV, prefix: str) -> Writer:
    return KeyWriter(kv, prefix).writer()


@dataclass
class Writer:
    """Makes numbered writes, one call each, and remembers which were acknowledged and how long each took.

    ``attempt(n)`` makes write ``n`` and returns its name, raising one of ``errors`` when it fails.
    A failed write is never retried under the same number, so the acknowledged list has no
    duplicates; writes are creates that fail on an existing name, so an ambiguous failure (committed,
    answer lost) cannot be counted twice either.
    """

    attempt: Callable[[int], str]
    errors: tuple[type[BaseException], ...]
    # Where the next call goes (an endpoint), for the record.
    where: Callable[[], str] = lambda: ""
    acknowledged: list[str] = field(default_factory=list)
    records: list[CallRecord] = field(default_factory=list)
    attempts: int = 0

    def write(self) -> bool:
        number = self.attempts
        self.attempts += 1
        endpoint = self.where()
        started = time.monotonic()
        try:
            name = self.attempt(number)
        except self.errors as error:
            self.records.append(CallRecord(started, time.monotonic() - started, False, endpoint, repr(error)))
            return False
        self.records.append(CallRecord(started, time.monotonic() - started, True, endpoint))
        self.acknowledged.append(name)
        return True

    def write_until(self, successes: int, timeout: float) -> None:
        """Keep writing until ``successes`` more writes succeeded."""
        goal = len(self.acknowledged) + successes
        wait_until(
            f"{successes} acknowledged writes",
            lambda: self.write() and len(self.acknowledged) >= goal,
            timeout,
        )

    def failures(self) -> int:
        return sum(not r.ok for r in self.records)

    def longest_call(self) -> float:
        return max((r.seconds for r in self.records), default=0.0)

    def outage_after(self, fault_at: float) -> float:
        """Seconds from ``fault_at`` until the first call that started after it and succeeded ended."""
        for record in self.records:
            if record.ok and record.started >= fault_at:
                return record.started + record.seconds - fault_at
        raise AssertionError("no write succeeded after the fault")


@dataclass
class KeyWriter:
    """A ``Writer`` of keys under ``prefix`` through the services' ``EtcdKV`` (create-if-absent txns)."""

    kv: EtcdKV
    prefix: str

    def attempt(self, number: int) -> str:
        key = f"{self.prefix}/{number:06d}"
        self.kv.txn([Compare.absent(key.encode())], [Put(key.encode(), key.encode())])
        return key

    def writer(self) -> Writer:
        return Writer(self.attempt, (ServiceError,), lambda: self.kv.endpoint)


@dataclass
class Timings:
    """Per-scenario phase durations, printed as one table at the end of the session."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)

    def add(self, scenario: str, phase: str, seconds: float) -> None:
        self.rows.append((scenario, phase, seconds))

    @contextlib.contextmanager
    def measure(self, scenario: str, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(scenario, phase, time.monotonic() - started)

    def render(self) -> list[str]:
        width = max((len(s) + len(p) for s, p, _ in self.rows), default=0) + 3
        return [
            f"{f'{scenario}: {phase}':{width}} {seconds:8.2f} s" for scenario, phase, seconds in self.rows
        ]
