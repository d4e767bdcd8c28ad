"""The vswitch agent's configuration: one frozen value, validated once at start.

``load_config`` builds it from the command line and the environment (flags win; names and defaults in
``overland.defaults``, the flags every service shares in ``services.common.config``). It imports nothing
heavy: a restarting agent reads it before its datapath forwards (see process.py).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Self

from overland import defaults
from services.common.config import (
    CommandLine,
    EtcdConfig,
    LogConfig,
    ServerConfig,
    TelemetryConfig,
    check,
)
from services.common.errors import FieldViolation

WHAT = "vswitch agent"
# The NVGRE overhead a VM must leave room for: outer IPv4 20 + GRE with key 8 + inner Ethernet 14.
NVGRE_OVERHEAD = 42
# Where agents keep their saved tables by default (tmpfs, beside the saved port lists: gone after a
# reboot, as the persistent TAPs are).
SNAPSHOT_DIR = "/run/overland/vswitch"

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


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
    # Where etcd is; ``etcd.timeout`` is the deadline of every etcd call.
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
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
    server: ServerConfig = field(default_factory=lambda: ServerConfig(bind=defaults.VSWITCH.address))
    log: LogConfig = field(default_factory=LogConfig)
    # Where spans and metrics go (service instance = host name); exporting nowhere runs it untraced.
    telemetry: TelemetryConfig = field(default_factory=lambda: TelemetryConfig(defaults.VSWITCH.otel_name))
    # The local copy of the last applied table ("" = none): a restarted agent forwards on it before it
    # reaches etcd (services/vswitch/snapshot.py). Saved at most every ``snapshot_interval`` seconds
    # while the table changes, and on stop.
    table_snapshot: str = ""
    snapshot_interval: float = 2.0

    @property
    def inner_mtu(self) -> int:
        return self.pa_mtu - NVGRE_OVERHEAD

    @property
    def etcd_settings(self) -> EtcdConfig:
        """``etcd`` with the agent's watch idle timeout, for its etcd client."""
        return replace(self.etcd, watch_idle_timeout=self.watch_idle_timeout)

    def violations(self) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        if not _HOST_NAME.match(self.host_name):
            found.append(FieldViolation("host_name", "1-63 letters, digits, '.', '_' or '-'"))
        try:
            ipaddress.IPv4Address(self.pa_ip)
        except ValueError:
            found.append(FieldViolation("pa_ip", f"not an IPv4 address: {self.pa_ip!r}"))
        found += self.etcd.violations()
        if self.lease_ttl < 2:
            found.append(FieldViolation("lease_ttl", "at least 2 seconds"))
        if not 1 <= self.page_size <= 100_000:
            found.append(FieldViolation("page_size", "1..100000"))
        if any(not rdid or "/" in rdid for rdid in self.rdids):
            found.append(FieldViolation("rdids", "routing domain ids are non-empty and have no '/'"))
        if not self.status_interval >= 0:
            found.append(FieldViolation("status_interval", "must not be negative"))
        if not self.progress_every > 0:
            found.append(FieldViolation("progress_every", "must be positive"))
        if not self.watch_idle_timeout > 2 * self.progress_every:
            found.append(FieldViolation("watch_idle_timeout", "must exceed twice progress_every"))
        if not self.snapshot_interval > 0:
            found.append(FieldViolation("snapshot_interval", "must be positive"))
        if not NVGRE_OVERHEAD + 68 <= self.pa_mtu <= 65535:
            found.append(FieldViolation("pa_mtu", f"{NVGRE_OVERHEAD + 68}..65535"))
        found += self.backoff.violations()
        found += [*self.server.violations(), *self.log.violations(), *self.telemetry.violations()]
        return found

    def validate(self) -> Self:
        """Raise ``ConfigError`` listing every bad field."""
        check(self.violations(), WHAT)
        return self


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """The validated configuration from ``argv`` (default: sys.argv) and ``env`` (default: os.environ);
    ``ConfigError`` names every bad field."""
    cli = CommandLine(defaults.VSWITCH, "The Overland vswitch agent.", env)
    cli.option("--host-name", defaults.VSWITCH_HOST_NAME_ENV, socket.gethostname(), "this host's name")
    cli.option("--pa-ip", defaults.VSWITCH_PA_IP_ENV, "", "this host's provider address")
    cli.add_etcd_options()
    cli.option("--lease-ttl", defaults.VSWITCH_LEASE_TTL_ENV, "10", "the host key's lease TTL, s")
    cli.option("--page-size", defaults.VSWITCH_PAGE_SIZE_ENV, "2000", "keys per cold-sync page")
    cli.parser.add_argument(
        "--rdid",
        action="append",
        default=None,
        help=f"serve only this routing domain (repeatable) [env {defaults.VSWITCH_RDIDS_ENV}=ID,ID...]",
    )
    cli.option("--pa-mtu", defaults.VSWITCH_PA_MTU_ENV, "1500", "MTU of the provider network")
    cli.switch("--table-only", defaults.VSWITCH_TABLE_ONLY_ENV, "table_only", "keep the table, no datapath")
    cli.add_server_options()
    cli.option(
        "--table-snapshot",
        defaults.VSWITCH_TABLE_SNAPSHOT_ENV,
        "",
        f"the saved table a restart forwards on first (with a datapath: {SNAPSHOT_DIR}/HOST-PA.table)",
    )
    cli.add_log_options()
    args = cli.parse(argv)
    host_name, pa_ip = args.host_name.strip(), args.pa_ip.strip()
    snapshot = args.table_snapshot
    if not snapshot and not args.table_only:
        snapshot = f"{SNAPSHOT_DIR}/{host_name}-{pa_ip}.table"
    rdids = (
        args.rdid if args.rdid is not None else cli.comma_list(cli.env.get(defaults.VSWITCH_RDIDS_ENV, ""))
    )
    config = AgentConfig(
        host_name=host_name,
        pa_ip=pa_ip,
        etcd=cli.etcd(args),
        lease_ttl=cli.integer(args.lease_ttl, "lease_ttl"),
        page_size=cli.integer(args.page_size, "page_size"),
        rdids=tuple(rdids),
        pa_mtu=cli.integer(args.pa_mtu, "pa_mtu"),
        table_only=args.table_only,
        server=cli.server(args),
        log=cli.log(args),
        telemetry=cli.telemetry(defaults.VSWITCH.otel_name, host_name),
        table_snapshot=snapshot,
    )
    return cli.finish(config, WHAT)
