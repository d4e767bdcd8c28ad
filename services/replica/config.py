"""The replica service's configuration (both roles), parsed from the command line and validated once."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from overland import defaults
from overland.config import TlsFiles
from services.common.config import ServerConfig, TelemetryConfig, telemetry_from_env
from services.common.errors import FieldViolation
from services.replica.errors import InvalidReplicationSettings
from services.replica.settings import validate_name

ROLES = ("primary", "dr")
# Without TLS the DR site takes the primary's name from this header (local development only).
PRIMARY_HEADER = "x-overland-primary"
DEFAULT_PRIMARY_NAME = "primary"


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica service process: a primary (management, tracking, cycles) or a DR site (receiver)."""

    role: str
    server: ServerConfig = field(default_factory=ServerConfig)
    state_dir: Path = Path(".overland/replica")
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
    # Where spans and metrics go; None runs the service untraced.
    telemetry: TelemetryConfig | None = None

    def validate(self) -> None:
        violations: list[FieldViolation] = []
        if self.role not in ROLES:
            violations.append(FieldViolation("role", f"must be one of {ROLES}, got {self.role!r}"))
        if self.role == "dr" and not self.allowed_primaries:
            violations.append(
                FieldViolation("allowed_primaries", "a DR site needs at least one allowed primary (NAME=DIR)")
            )
        for name in self.allowed_primaries:
            violations += validate_name(name, f"allowed_primaries[{name}]")
        if self.role == "primary":
            violations += validate_name(self.primary_name, "primary_name")
        host, sep, port = self.nbd_bind.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            violations.append(FieldViolation("nbd_bind", f"must be host:port, got {self.nbd_bind!r}"))
        if self.scheduler_tick_seconds <= 0:
            violations.append(FieldViolation("scheduler_tick_seconds", "must be positive"))
        if self.fault_apply_delay_seconds < 0:
            violations.append(FieldViolation("fault_apply_delay_seconds", "must not be negative"))
        if self.client_tls is not None:
            for name in ("ca", "cert", "key"):
                path = getattr(self.client_tls, name)
                if path is None or not path.is_file():
                    violations.append(FieldViolation(f"client_tls.{name}", "file not found"))
        if violations:
            raise InvalidReplicationSettings(
                "invalid replica service configuration: "
                + "; ".join(f"{v.field}: {v.description}" for v in violations),
                violations,
            )
        self.server.validate()
        if self.telemetry is not None:
            self.telemetry.validate()


def service_name(role: str) -> str:
    """The OpenTelemetry service name of a role: the two sites of one trace are told apart by it."""
    return f"{defaults.REPLICA.otel_name}-{role}"


def parse_args(argv: list[str] | None = None) -> ReplicaConfig:
    """``python -m services.replica --role primary|dr ...`` into a validated config."""
    parser = argparse.ArgumentParser(prog="python -m services.replica", description=__doc__)
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--bind", default=defaults.REPLICA.address, help="host:port (port 0: any)")
    parser.add_argument("--state-dir", default=".overland/replica", type=Path)
    parser.add_argument(
        "--primary-name", default=DEFAULT_PRIMARY_NAME, help="primary: the name DR sites allow"
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="DR: allow replication from primary NAME, storing its replicas under DIR (repeatable)",
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate (enables TLS)")
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument(
        "--tls-client-ca", type=Path, help="DR: require client certificates signed by this CA"
    )
    parser.add_argument("--client-ca", type=Path, help="primary: the CA that signed DR site certificates")
    parser.add_argument(
        "--client-cert", type=Path, help="primary: its client certificate (CN = primary name)"
    )
    parser.add_argument("--client-key", type=Path)
    parser.add_argument("--nbd-bind", default="127.0.0.1:0", help="primary: NBD export host:port")
    parser.add_argument("--tick", type=float, default=1.0, help="scheduler tick in seconds")
    parser.add_argument("--fault-apply-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    allowed: dict[str, Path] = {}
    for item in args.allow:
        name, sep, directory = item.partition("=")
        if not sep or not directory:
            parser.error(f"--allow takes NAME=DIR, got {item!r}")
        allowed[name] = Path(directory)
    tls = (
        TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_client_ca)
        if args.tls_cert and args.tls_key
        else None
    )
    client_tls = (
        TlsFiles(ca=args.client_ca, cert=args.client_cert, key=args.client_key)
        if args.client_ca and args.client_cert and args.client_key
        else None
    )
    config = ReplicaConfig(
        role=args.role,
        server=ServerConfig(bind=args.bind, tls=tls),
        state_dir=args.state_dir,
        primary_name=args.primary_name,
        client_tls=client_tls,
        scheduler_tick_seconds=args.tick,
        nbd_bind=args.nbd_bind,
        allowed_primaries=allowed,
        fault_apply_delay_seconds=args.fault_apply_delay,
        telemetry=telemetry_from_env(
            os.environ,
            service_name(args.role),
            service_instance=args.primary_name if args.role == "primary" else "",
        ),
    )
    config.validate()
    return config
