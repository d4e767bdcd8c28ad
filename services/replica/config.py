"""The replica service's configuration, for both roles: a primary (tracks VM disks, streams deltas to DR
sites) or a DR site (receives them, keeps recovery points).

``load_config`` builds it once at start from the command line and the environment (flags win; names
and defaults in ``overland.defaults``, the flags every service shares in ``services.common.config``;
``--role`` and the role's own options are this service's) and validates it there.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
)
from services.common.errors import FieldViolation
from services.replica.settings import validate_name

WHAT = "replica service"
ROLES = ("primary", "dr")
# Without TLS the DR site takes the primary's name from this header (local development only).
PRIMARY_HEADER = "x-overland-primary"
DEFAULT_PRIMARY_NAME = "primary"
DEFAULT_STATE_DIR = ".overland/replica"


def otel_name(role: str) -> str:
    """The OpenTelemetry service name of a role: the two sites of one trace are told apart by it."""
    return f"{defaults.REPLICA.otel_name}-{role}"


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica service process: a primary (management, tracking, cycles) or a DR site (receiver)."""

    role: str
    server: ServerConfig = field(default_factory=lambda: ServerConfig(bind=defaults.REPLICA.address))
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    # Primary: its name as DR sites know it, and how it reaches them.
    primary_name: str = DEFAULT_PRIMARY_NAME
    # How it authenticates to DR sites: its certificate (CN = its name) and the DR sites' CA.
    client_tls: TlsFiles | None = None
    scheduler_tick_seconds: float = 1.0
    # Primary: where the NBD export of the VM disks listens (exports are named "<vm>/<disk>").
    nbd_bind: str = "127.0.0.1:0"
    # DR: "allow replication from the specified servers", each with its storage location.
    allowed_primaries: dict[str, Path] = field(default_factory=dict)
    # A fault-injection hook for crash tests: a pause after each record applied at commit.
    fault_apply_delay_seconds: float = 0.0
    log: LogConfig = field(default_factory=LogConfig)
    # Where spans and metrics go; exporting nowhere (the default) runs the service untraced.
    telemetry: TelemetryConfig = field(default_factory=lambda: TelemetryConfig(defaults.REPLICA.otel_name))

    def violations(self) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        if self.role not in ROLES:
            found.append(FieldViolation("role", f"must be one of {ROLES}, got {self.role!r}"))
        if self.role == "dr" and not self.allowed_primaries:
            found.append(
                FieldViolation("allowed_primaries", "a DR site needs at least one allowed primary (NAME=DIR)")
            )
        for name in self.allowed_primaries:
            found += validate_name(name, f"allowed_primaries[{name}]")
        if self.role == "primary":
            found += validate_name(self.primary_name, "primary_name")
        found += host_port_violation(self.nbd_bind, "nbd_bind")
        if not self.scheduler_tick_seconds > 0:
            found.append(FieldViolation("scheduler_tick_seconds", "must be positive"))
        if not self.fault_apply_delay_seconds >= 0:
            found.append(FieldViolation("fault_apply_delay_seconds", "must not be negative"))
        if self.client_tls is not None:
            for name in ("ca", "cert", "key"):
                path = getattr(self.client_tls, name)
                if path is None or not path.is_file():
                    found.append(FieldViolation(f"client_tls.{name}", f"file not found: {path}"))
        found += [*self.server.violations(), *self.log.violations(), *self.telemetry.violations()]
        return found

    def validate(self) -> Self:
        check(self.violations(), WHAT)
        return self


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ReplicaConfig:
    """The validated configuration of ``python -m services.replica --role primary|dr ...`` from ``argv``
    (default: sys.argv) and ``env`` (default: os.environ); ``ConfigError`` names every bad field."""
    cli = CommandLine(defaults.REPLICA, "The Overland replica service (a primary or a DR site).", env)
    cli.parser.add_argument("--role", required=True, choices=ROLES)
    cli.add_server_options()
    cli.option("--state-dir", None, DEFAULT_STATE_DIR, "where the service keeps its state")
    cli.option("--primary-name", None, DEFAULT_PRIMARY_NAME, "primary: the name DR sites allow")
    cli.parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="DR: allow replication from primary NAME, storing its replicas under DIR (repeatable)",
    )
    cli.option("--client-ca", None, "", "primary: the CA that signed DR site certificates")
    cli.option("--client-cert", None, "", "primary: its client certificate (CN = primary name)")
    cli.option("--client-key", None, "", "primary: its private key")
    cli.option("--nbd-bind", None, "127.0.0.1:0", "primary: NBD export host:port")
    cli.option("--tick", None, "1", "scheduler tick in seconds")
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
    primary_name = args.primary_name.strip()
    config = ReplicaConfig(
        role=args.role,
        server=cli.server(args),
        state_dir=Path(args.state_dir),
        primary_name=primary_name,
        client_tls=cli.tls(args.client_ca, args.client_cert, args.client_key),
        scheduler_tick_seconds=cli.seconds(args.tick, "scheduler_tick_seconds"),
        nbd_bind=args.nbd_bind.strip(),
        allowed_primaries=allowed,
        fault_apply_delay_seconds=cli.seconds(args.fault_apply_delay, "fault_apply_delay_seconds"),
        log=cli.log(args),
        telemetry=cli.telemetry(otel_name(args.role), primary_name if args.role == "primary" else ""),
    )
    return cli.finish(config, WHAT)
