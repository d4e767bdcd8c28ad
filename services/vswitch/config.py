"""The vswitch agent's configuration: one frozen value, validated once at start, read from the environment
or command-line flags by ``python -m services.vswitch``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from overland import defaults
from services.common.config import ServerConfig, TelemetryConfig, telemetry_from_env
from services.common.errors import FieldViolation, InvalidArgument

SERVICE_NAME = defaults.VSWITCH.otel_name

# The NVGRE overhead a VM must leave room for: outer IPv4 20 + GRE with key 8 + inner Ethernet 14.
NVGRE_OVERHEAD = 42
# Where agents keep their saved tables by default (tmpfs, beside the saved port lists: gone after a
# reboot, as the persistent TAPs are).
SNAPSHOT_DIR = "/run/overland/vswitch"

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class VswitchConfigError(InvalidArgument):
    """The agent's configuration is invalid; the agent does not start."""


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with a cap and jitter, for reconnecting to etcd."""

    initial_seconds: float = 0.05
    cap_seconds: float = 5.0
    multiplier: float = 2.0
    # The fraction of each delay that is random, so that agents that lost etcd together do not return
    # together.
    jitter: float = 0.5

    def delay(self, attempt: int, random_unit: float) -> float:
        """The wait before retry ``attempt`` (0-based), given a uniform random number in [0, 1)."""
        exponent = min(attempt, 64)
        base = min(self.cap_seconds, self.initial_seconds * self.multiplier**exponent)
        return base * (1.0 - self.jitter * random_unit)

    def violations(self) -> list[FieldViolation]:
        found = []
        if self.initial_seconds <= 0:
            found.append(FieldViolation("backoff.initial_seconds", "must be positive"))
        if self.cap_seconds < self.initial_seconds:
            found.append(FieldViolation("backoff.cap_seconds", "must be at least initial_seconds"))
        if self.multiplier < 1:
            found.append(FieldViolation("backoff.multiplier", "must be at least 1"))
        if not 0 <= self.jitter < 1:
            found.append(FieldViolation("backoff.jitter", "must be in [0, 1)"))
        return found


@dataclass(frozen=True)
class AgentConfig:
    """What one host's agent needs: who it is, where etcd is, and how it watches."""

    host_name: str
    pa_ip: str
    etcd_endpoints: tuple[str, ...] = (defaults.ETCD_ENDPOINT,)
    # Deadline of every etcd call, seconds.
    etcd_timeout: float = defaults.ETCD_TIMEOUT_SECONDS
    # The host key's lease TTL; the lease is kept alive every TTL/3.
    lease_ttl: int = 10
    # Keys per page of the cold-sync range reads.
    page_size: int = 2000
    # The routing domains this host serves; empty means all of them.
    rdids: tuple[str, ...] = ()
    # At most one host-status write per this many seconds: the applied revision changes often, and each
    # status write is an etcd transaction per host (at 0.2 s, agents spent ~25% more CPU per write).
    status_interval: float = 1.0
    # While no change arrives, ask etcd this often how far the watches have caught up.
    progress_every: float = 1.0
    # A watch stream silent this long is treated as broken (a hung or partitioned etcd sends no error).
    # The agent asks every stream for progress each ``progress_every``, so a live etcd always answers.
    watch_idle_timeout: float = 10.0
    # The MTU of the provider network; VMs get this minus the NVGRE overhead.
    pa_mtu: int = 1500
    # Run without a datapath: only the table (tests, benches, a policy-only host).
    table_only: bool = False
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    server: ServerConfig = field(default_factory=ServerConfig)
    # Where spans and metrics go (service instance = host name); None runs the agent untraced.
    telemetry: TelemetryConfig | None = None
    # The local copy of the last applied table ("" = none): a restarted agent forwards on it before it
    # reaches etcd (services/vswitch/snapshot.py). Saved at most every ``snapshot_interval`` seconds
    # while the table changes, and on stop.
    table_snapshot: str = ""
    snapshot_interval: float = 2.0

    @property
    def inner_mtu(self) -> int:
        return self.pa_mtu - NVGRE_OVERHEAD

    def validate(self) -> None:
        """Raise ``VswitchConfigError`` listing every bad field."""
        violations: list[FieldViolation] = []
        if not _HOST_NAME.match(self.host_name):
            violations.append(FieldViolation("host_name", "1-63 letters, digits, '.', '_' or '-'"))
        try:
            ipaddress.IPv4Address(self.pa_ip)
        except ValueError:
            violations.append(FieldViolation("pa_ip", f"not an IPv4 address: {self.pa_ip!r}"))
        if not self.etcd_endpoints:
            violations.append(FieldViolation("etcd_endpoints", "at least one endpoint"))
        for endpoint in self.etcd_endpoints:
            host, sep, port = endpoint.rpartition(":")
            if not sep or not host or not port.isdigit():
                violations.append(FieldViolation("etcd_endpoints", f"not host:port: {endpoint!r}"))
        if self.etcd_timeout <= 0:
            violations.append(FieldViolation("etcd_timeout", "must be positive"))
        if self.lease_ttl < 2:
            violations.append(FieldViolation("lease_ttl", "at least 2 seconds"))
        if not 1 <= self.page_size <= 100_000:
            violations.append(FieldViolation("page_size", "1..100000"))
        if any(not rdid or "/" in rdid for rdid in self.rdids):
            violations.append(FieldViolation("rdids", "routing domain ids are non-empty and have no '/'"))
        if self.status_interval < 0:
            violations.append(FieldViolation("status_interval", "must not be negative"))
        if self.progress_every <= 0:
            violations.append(FieldViolation("progress_every", "must be positive"))
        if self.watch_idle_timeout <= 2 * self.progress_every:
            violations.append(FieldViolation("watch_idle_timeout", "must exceed twice progress_every"))
        if self.snapshot_interval <= 0:
            violations.append(FieldViolation("snapshot_interval", "must be positive"))
        if not NVGRE_OVERHEAD + 68 <= self.pa_mtu <= 65535:
            violations.append(FieldViolation("pa_mtu", f"{NVGRE_OVERHEAD + 68}..65535"))
        violations.extend(self.backoff.violations())
        if violations:
            raise VswitchConfigError("invalid vswitch agent configuration", violations)
        self.server.validate()
        if self.telemetry is not None:
            self.telemetry.validate()


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, *, telemetry: bool = True
) -> AgentConfig:
    """The configuration from flags, each defaulting to an ``OVERLAND_VSWITCH_*`` environment variable.
    ``telemetry=False`` leaves ``telemetry`` unset (``telemetry_config`` fills it in later)."""
    env = os.environ if environ is None else environ

    def default(name: str, fallback: str) -> str:
        return env.get(f"OVERLAND_VSWITCH_{name}", fallback)

    parser = argparse.ArgumentParser(
        prog="python -m services.vswitch", description="The Overland vswitch agent."
    )
    parser.add_argument("--host-name", default=default("HOST_NAME", socket.gethostname()))
    parser.add_argument("--pa-ip", default=default("PA_IP", ""), help="this host's provider address")
    etcd = default("ETCD", env.get("OVERLAND_ETCD", defaults.ETCD_ENDPOINT))
    parser.add_argument("--etcd", default=etcd, help="host:port[,...]")
    etcd_timeout = float(default("ETCD_TIMEOUT", str(defaults.ETCD_TIMEOUT_SECONDS)))
    parser.add_argument("--etcd-timeout", type=float, default=etcd_timeout)
    parser.add_argument("--lease-ttl", type=int, default=int(default("LEASE_TTL", "10")))
    parser.add_argument("--page-size", type=int, default=int(default("PAGE_SIZE", "2000")))
    parser.add_argument("--rdid", action="append", default=None, help="serve only this routing domain")
    parser.add_argument("--pa-mtu", type=int, default=int(default("PA_MTU", "1500")))
    parser.add_argument("--table-only", action="store_true", default=default("TABLE_ONLY", "") == "1")
    parser.add_argument("--bind", default=default("BIND", defaults.VSWITCH.address), help="gRPC host:port")
    parser.add_argument(
        "--table-snapshot",
        default=default("TABLE_SNAPSHOT", ""),
        help=f"the saved table a restart forwards on first (with a datapath: {SNAPSHOT_DIR}/HOST-PA.table)",
    )
    args = parser.parse_args(argv)
    snapshot = args.table_snapshot
    if not snapshot and not args.table_only:
        snapshot = f"{SNAPSHOT_DIR}/{args.host_name}-{args.pa_ip}.table"
    rdids = args.rdid if args.rdid is not None else [r for r in default("RDIDS", "").split(",") if r]
    config = AgentConfig(
        host_name=args.host_name,
        pa_ip=args.pa_ip,
        etcd_endpoints=tuple(e.strip() for e in args.etcd.split(",") if e.strip()),
        etcd_timeout=args.etcd_timeout,
        lease_ttl=args.lease_ttl,
        page_size=args.page_size,
        rdids=tuple(rdids),
        pa_mtu=args.pa_mtu,
        table_only=args.table_only,
        server=ServerConfig(bind=args.bind),
        telemetry=telemetry_config(args.host_name, env) if telemetry else None,
        table_snapshot=snapshot,
    )
    config.validate()
    return config


def telemetry_config(host_name: str, env: Mapping[str, str]) -> TelemetryConfig:
    """The agent's telemetry from the standard OTLP variable and OVERLAND_SPAN_FILE."""
    return telemetry_from_env(env, SERVICE_NAME, host_name)
