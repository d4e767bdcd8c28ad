"""The replica service's configuration: one process per site. A site is the primary of the VMs it
replicates (tracks their disks, streams deltas to DR sites), the replica of the VMs other sites
replicate to it (when it has an allow-list), and runs VMs on qemu; which of these a VM is at a site
is that VM's state, not the process's.

``load_config`` builds it once at start from the command line and the environment (flags win; names
and defaults in ``overland.defaults``, the flags every service shares in ``services.common.config``)
and validates it there.
"""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

from overland import defaults
from overland.config import TlsFiles
from services.common.config import (
    CommandLine,
    LogConfig,
    ServerConfig,
    TelemetryConfig,
    check,
    host_port_violation,
    plaintext_listen_violation,
    tls_file_problems,
)
from services.common.errors import FieldViolation
from services.replica.settings import validate_name

WHAT = "replica service"
# Without TLS a site takes the calling site's name from this header (local development only): from
# loopback callers, or from anyone with ``insecure_primary_header``.
PRIMARY_HEADER = "x-overland-primary"
DEFAULT_STATE_DIR = ".overland/replica"
# Where ``make guest`` puts the guest image (its manifest names the kernel and the initramfs).
DEFAULT_GUEST_IMAGE = ".overland/guest/current"
ACCELERATORS = ("auto", "kvm", "tcg")
# A unix socket's path must fit sockaddr_un (108 bytes with its NUL).
MAX_SOCKET_PATH = 107
# A bind on every interface names no address another site could use.
WILDCARD_HOSTS = ("", "0.0.0.0", "[::]", "::")  # noqa: S104 (these are compared, not bound)
# Interface names of network namespaces (ip netns): no slash, no blank.
_NETNS = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def default_site_name() -> str:
    """A site is a host: by default it is known by the machine's host name (as Hyper-V's replica
    servers are)."""
    return socket.gethostname()


def client_tls_violations(tls: TlsFiles | None, name: str, *, complete: bool) -> list[FieldViolation]:
    """The TLS files a site calls with, checked at start: each file missing (with ``complete``, each
    of the three not given too), then what ``tls_file_problems`` finds (a key that is not the
    certificate's, a file that is not PEM)."""
    if tls is None:
        return []
    if tls.server_name is not None and tls.ca is None:
        # Without a CA the name is never checked: TLS to a server of the system's trusted CAs.
        return [
            FieldViolation(f"{name}.server_name", "is checked against the certificate of its CA: give the CA")
        ]
    missing = [
        FieldViolation(f"{name}.{part}", f"file not found: {path}")
        for part in ("ca", "cert", "key")
        if ((path := getattr(tls, part)) is None and complete) or (path is not None and not path.is_file())
    ]
    return missing or [FieldViolation(name, problem) for problem in tls_file_problems(tls)]


def client_tls_options(
    cli: CommandLine, name: str, what: str, variables: tuple[str | None, str | None, str | None] = (None,) * 3
) -> None:
    """``--NAME-ca``, ``--NAME-cert``, ``--NAME-key``: the TLS files a site calls ``what`` with (each
    defaulting to its variable, if it has one)."""
    ca, cert, key = variables
    cli.option(f"--{name}-ca", ca, "", f"the CA of {what}'s certificate")
    cli.option(f"--{name}-cert", cert, "", f"this site's client certificate for {what}")
    cli.option(f"--{name}-key", key, "", "its private key")


def client_tls(
    cli: CommandLine, args: argparse.Namespace, name: str, server_name: str = ""
) -> TlsFiles | None:
    """The files of ``client_tls_options(cli, name, ...)``, None when none is given; ``server_name``
    (checked instead of the endpoint's host) alone makes TLS files too, so validation can refuse it."""
    given = [getattr(args, f"{name}_{part}") for part in ("ca", "cert", "key")]
    tls = cli.tls(*given)
    if server_name:
        return replace(tls or TlsFiles(), server_name=server_name)
    return tls


@dataclass(frozen=True)
class VmRuntimeConfig:
    """The site's VM runtime: the guest image qemu boots, the accelerator, the network namespace qemu
    runs in, and the vswitch agent whose ports the VMs' NICs are."""

    guest_image: Path = Path(DEFAULT_GUEST_IMAGE)
    # auto: KVM where it really boots the guest, else TCG (probed once, cached in the state dir).
    accel: str = "auto"
    # qemu runs in this network namespace (the agent's, where its ports are); empty: the service's own.
    netns: str = ""
    # The host's vswitch agent; empty: no agent, each NIC is a plain TAP the site makes in ``netns``.
    vswitch_endpoint: str = defaults.VSWITCH.address
    # TLS to the agent (it serves mutual TLS beyond loopback): its CA, and the site's certificate, which
    # the agent's rules must allow to attach ports (a host identity for this host, or an admin).
    vswitch_tls: TlsFiles | None = None

    def violations(self) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        if self.accel not in ACCELERATORS:
            found.append(FieldViolation("vm.accel", f"must be one of {ACCELERATORS}, got {self.accel!r}"))
        if self.netns and not _NETNS.match(self.netns):
            found.append(FieldViolation("vm.netns", f"{self.netns!r} is not a network namespace name"))
        if self.vswitch_endpoint:
            found += host_port_violation(self.vswitch_endpoint, "vm.vswitch_endpoint")
        found += client_tls_violations(self.vswitch_tls, "vm.vswitch_tls", complete=False)
        return found


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica service process: a site (its replications, its replicas, its VMs)."""

    server: ServerConfig = field(default_factory=lambda: ServerConfig(bind=defaults.REPLICA.address))
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    # The name other sites know this one by (their allow-lists; the CN of its client certificate).
    site_name: str = field(default_factory=default_site_name)
    # How it authenticates to the sites it replicates to: its certificate (CN = its name) and their CA.
    client_tls: TlsFiles | None = None
    scheduler_tick_seconds: float = 1.0
    # The NBD export of the site's disks (exports are named "<vm>/<disk>"): TCP, and a unix socket
    # (None: ``state_dir/nbd.sock``) that reaches qemu in another network namespace.
    nbd_bind: str = "127.0.0.1:0"
    nbd_socket: Path | None = None
    # "Allow replication from the specified servers", each with its storage location.
    allowed_primaries: dict[str, Path] = field(default_factory=dict)
    # Without TLS, believe the primary's name from the PRIMARY_HEADER of a caller beyond loopback
    # (--insecure-primary-header): anyone who reaches the port can then pose as an allowed primary.
    insecure_primary_header: bool = False
    vm: VmRuntimeConfig = field(default_factory=VmRuntimeConfig)
    # Where other sites reach this one's gRPC (the deltas' header tells the DR site; a reverse
    # replicates back to it); empty: the bind address (with a wildcard host, this machine's name).
    site_endpoint: str = ""
    # This site's host in the policy service's registry (its vswitch agent's --host-name): failover
    # moves a VM's lookup records to the PA registered for it.
    host_name: str = field(default_factory=default_site_name)
    # The policy service failover moves lookup records through, and its TLS; empty: records are not
    # moved (a site without a tenant network).
    policy_endpoint: str = ""
    policy_tls: TlsFiles | None = None
    # A fault-injection hook for crash tests: a pause after each record captured and applied at commit.
    fault_apply_delay_seconds: float = 0.0
    log: LogConfig = field(default_factory=LogConfig)
    # Where spans and metrics go; exporting nowhere (the default) runs the service untraced.
    telemetry: TelemetryConfig = field(default_factory=lambda: TelemetryConfig(defaults.REPLICA.otel_name))

    @property
    def endpoint(self) -> str:
        """This site's gRPC as other sites reach it."""
        if self.site_endpoint:
            return self.site_endpoint
        host, _sep, port = self.server.bind.rpartition(":")
        if host in WILDCARD_HOSTS:
            host = socket.gethostname()
        return f"{host}:{port}"

    def bound_to(self, port: int) -> ReplicaConfig:
        """This configuration once the server listens on ``port``: a site bound to port 0 tells other
        sites the port it got, not ":0" (they call it back: a planned failover adopts through it)."""
        if self.site_endpoint or not self.server.bind.endswith(":0"):
            return self
        host = self.endpoint.rpartition(":")[0]
        return replace(self, site_endpoint=f"{host}:{port}")

    @property
    def nbd_socket_path(self) -> Path:
        return self.nbd_socket if self.nbd_socket is not None else self.state_dir / "nbd.sock"

    def violations(self) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        for name in self.allowed_primaries:
            found += validate_name(name, f"allowed_primaries[{name}]")
        found += validate_name(self.site_name, "site_name")
        nbd = host_port_violation(self.nbd_bind, "nbd_bind")
        # The NBD export has no TLS and no authentication: beyond loopback it hands the site's disks
        # to anyone who reaches the port.
        found += nbd or plaintext_listen_violation(
            self.nbd_bind, "nbd_bind", self.server.insecure_listen, "NBD has no TLS"
        )
        if len(str(self.nbd_socket_path.absolute())) > MAX_SOCKET_PATH:
            found.append(
                FieldViolation("nbd_socket", f"a unix socket path has at most {MAX_SOCKET_PATH} bytes")
            )
        if not self.scheduler_tick_seconds > 0:
            found.append(FieldViolation("scheduler_tick_seconds", "must be positive"))
        if self.site_endpoint:
            found += host_port_violation(self.site_endpoint, "site_endpoint", min_port=1)
        if self.policy_endpoint:
            found += host_port_violation(self.policy_endpoint, "policy_endpoint", min_port=1)
        if not _NETNS.match(self.host_name):
            found.append(FieldViolation("host_name", "1-64 letters, digits, '.', '_' or '-'"))
        found += client_tls_violations(self.policy_tls, "policy_tls", complete=False)
        if not self.fault_apply_delay_seconds >= 0:
            found.append(FieldViolation("fault_apply_delay_seconds", "must not be negative"))
        found += client_tls_violations(self.client_tls, "client_tls", complete=True)
        found += [
            *self.server.violations(),
            *self.vm.violations(),
            *self.log.violations(),
            *self.telemetry.violations(),
        ]
        return found

    def validate(self) -> Self:
        check(self.violations(), WHAT)
        return self


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ReplicaConfig:
    """The validated configuration of ``python -m services.replica ...`` from ``argv`` (default:
    sys.argv) and ``env`` (default: os.environ); ``ConfigError`` names every bad field."""
    cli = CommandLine(defaults.REPLICA, "The Overland replica service: one site.", env)
    cli.add_server_options()
    cli.option(
        "--site-name", defaults.REPLICA_SITE_NAME_ENV, default_site_name(), "the name other sites know"
    )
    cli.option(
        "--state-dir", defaults.REPLICA_STATE_DIR_ENV, DEFAULT_STATE_DIR, "where the site keeps its state"
    )
    cli.parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="allow replication from site NAME, storing its replicas under DIR (repeatable)",
    )
    cli.option("--client-ca", None, "", "the CA that signed the certificates of the sites replicated to")
    cli.option("--client-cert", None, "", "this site's client certificate (CN = its name)")
    cli.option("--client-key", None, "", "its private key")
    cli.option("--nbd-bind", None, "127.0.0.1:0", "NBD export host:port")
    cli.option(
        "--nbd-socket", defaults.REPLICA_NBD_SOCKET_ENV, "", "NBD export unix socket (STATE_DIR/nbd.sock)"
    )
    cli.option("--tick", None, "1", "scheduler tick in seconds")
    cli.option(
        "--guest-image", defaults.REPLICA_GUEST_IMAGE_ENV, DEFAULT_GUEST_IMAGE, "the guest image VMs boot"
    )
    cli.option("--accel", defaults.REPLICA_ACCEL_ENV, "auto", "VM accelerator: auto, kvm or tcg")
    cli.option("--vm-netns", defaults.REPLICA_VM_NETNS_ENV, "", "network namespace qemu runs in")
    cli.option(
        "--vswitch-endpoint",
        defaults.REPLICA_VSWITCH_ENDPOINT_ENV,
        defaults.VSWITCH.address,
        "the host's vswitch agent ('': plain TAPs)",
    )
    cli.option(
        "--site-endpoint", defaults.REPLICA_SITE_ENDPOINT_ENV, "", "host:port other sites reach this site at"
    )
    cli.option(
        "--host-name", defaults.REPLICA_HOST_NAME_ENV, default_site_name(), "this host in the policy registry"
    )
    cli.option(
        "--policy-endpoint",
        defaults.REPLICA_POLICY_ENDPOINT_ENV,
        "",
        "the policy service failover moves lookup records through ('': none)",
    )
    client_tls_options(cli, "policy", "the policy service")
    client_tls_options(
        cli,
        "vswitch",
        "the vswitch agent",
        (
            defaults.REPLICA_VSWITCH_CA_ENV,
            defaults.REPLICA_VSWITCH_CERT_ENV,
            defaults.REPLICA_VSWITCH_KEY_ENV,
        ),
    )
    cli.option(
        "--vswitch-server-name",
        defaults.REPLICA_VSWITCH_SERVER_NAME_ENV,
        "",
        "the name the agent's certificate is checked against (default: the endpoint's host)",
    )
    cli.switch(
        "--insecure-primary-header",
        defaults.REPLICA_INSECURE_PRIMARY_HEADER_ENV,
        "insecure_primary_header",
        f"without TLS, believe the {PRIMARY_HEADER} header of callers beyond loopback too",
    )
    cli.parser.add_argument("--fault-apply-delay", default="0", help=argparse.SUPPRESS)
    cli.add_log_options()
    args = cli.parse(argv)
    allowed: dict[str, Path] = {}
    for item in args.allow:
        name, sep, directory = item.partition("=")
        if not sep or not directory:
            cli.violations.append(
                FieldViolation("allowed_primaries", f"--allow takes NAME=DIR, got {item!r}")
            )
            continue
        allowed[name] = Path(directory)
    site_name = args.site_name.strip()
    state_dir = Path(args.state_dir)
    config = ReplicaConfig(
        server=cli.server(args),
        state_dir=state_dir,
        site_name=site_name,
        client_tls=cli.tls(args.client_ca, args.client_cert, args.client_key),
        scheduler_tick_seconds=cli.seconds(args.tick, "scheduler_tick_seconds"),
        nbd_bind=args.nbd_bind.strip(),
        nbd_socket=cli.path(args.nbd_socket.strip()),
        allowed_primaries=allowed,
        insecure_primary_header=args.insecure_primary_header,
        vm=VmRuntimeConfig(
            guest_image=Path(args.guest_image),
            accel=args.accel.strip(),
            netns=args.vm_netns.strip(),
            vswitch_endpoint=args.vswitch_endpoint.strip(),
            vswitch_tls=client_tls(cli, args, "vswitch", args.vswitch_server_name.strip()),
        ),
        site_endpoint=args.site_endpoint.strip(),
        host_name=args.host_name.strip(),
        policy_endpoint=args.policy_endpoint.strip(),
        policy_tls=client_tls(cli, args, "policy"),
        fault_apply_delay_seconds=cli.seconds(args.fault_apply_delay, "fault_apply_delay_seconds"),
        log=cli.log(args),
        telemetry=cli.telemetry(defaults.REPLICA.otel_name, site_name),
    )
    return cli.finish(config, WHAT)
