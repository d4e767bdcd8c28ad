"""The policy service's configuration: where it listens, which etcd it uses, with what deadline.

Built once at start from the environment and command-line arguments (arguments win) and
validated there; nothing reads the environment later.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from overland import defaults
from overland.config import TlsFiles
from services.common.config import EtcdConfig, ServerConfig, TelemetryConfig, telemetry_from_env
from services.common.errors import FieldViolation, InvalidArgument

DEFAULT_BIND = defaults.POLICY.address
DEFAULT_ETCD = defaults.ETCD_ENDPOINT
DEFAULT_ETCD_TIMEOUT = defaults.ETCD_TIMEOUT_SECONDS
SERVICE_NAME = defaults.POLICY.otel_name
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_WORKERS = 32


class InvalidPolicyConfig(InvalidArgument):
    """The service cannot start with this configuration."""


@dataclass(frozen=True)
class PolicyConfig:
    """``etcd.timeout`` is the deadline of every etcd call: past it a request fails UNAVAILABLE."""

    server: ServerConfig = field(default_factory=lambda: ServerConfig(bind=DEFAULT_BIND))
    etcd: EtcdConfig = field(
        default_factory=lambda: EtcdConfig(endpoints=(DEFAULT_ETCD,), timeout=DEFAULT_ETCD_TIMEOUT)
    )
    log_level: str = "INFO"
    log_json: bool = False
    # Server processes sharing the port (SO_REUSEPORT): a Python process runs one core at a time,
    # and bulk loads are CPU bound in it.
    workers: int = 1
    # Where spans and metrics go; exporting nowhere (the default) runs the service untraced.
    telemetry: TelemetryConfig = field(
        default_factory=lambda: TelemetryConfig(SERVICE_NAME, span_file="", otlp_endpoint="")
    )

    def validate(self) -> PolicyConfig:
        violations: list[FieldViolation] = []
        for name, part in (("server", self.server), ("etcd", self.etcd), ("telemetry", self.telemetry)):
            try:
                part.validate()
            except InvalidArgument as error:
                violations.append(FieldViolation(name, error.message))
        if self.etcd.timeout > 300:
            violations.append(FieldViolation("etcd", "the etcd deadline is at most 300 seconds"))
        if not 1 <= self.workers <= MAX_WORKERS:
            violations.append(FieldViolation("workers", f"1 to {MAX_WORKERS} server processes"))
        if self.workers > 1 and (self.server.bind.endswith(":0") or not self.server.reuse_port):
            violations.append(
                FieldViolation("workers", "several workers need a fixed port and reuse_port on")
            )
        if self.log_level.upper() not in _LOG_LEVELS:
            violations.append(FieldViolation("log_level", ", ".join(_LOG_LEVELS)))
        if violations:
            details = "; ".join(f"{v.field}: {v.description}" for v in violations)
            raise InvalidPolicyConfig(f"invalid policy service configuration: {details}", violations)
        return self


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.policy", description="Overland policy service")
    parser.add_argument("--bind", default=env.get("OVERLAND_POLICY_BIND", DEFAULT_BIND))
    parser.add_argument(
        "--etcd", default=env.get("OVERLAND_ETCD_ENDPOINTS", DEFAULT_ETCD), help="comma-separated endpoints"
    )
    parser.add_argument("--etcd-timeout", default=env.get("OVERLAND_ETCD_TIMEOUT", str(DEFAULT_ETCD_TIMEOUT)))
    parser.add_argument("--etcd-ca", default=env.get("OVERLAND_ETCD_CA", ""))
    parser.add_argument("--etcd-cert", default=env.get("OVERLAND_ETCD_CERT", ""))
    parser.add_argument("--etcd-key", default=env.get("OVERLAND_ETCD_KEY", ""))
    parser.add_argument("--tls-cert", default=env.get("OVERLAND_POLICY_TLS_CERT", ""))
    parser.add_argument("--tls-key", default=env.get("OVERLAND_POLICY_TLS_KEY", ""))
    parser.add_argument("--tls-client-ca", default=env.get("OVERLAND_POLICY_TLS_CLIENT_CA", ""))
    parser.add_argument(
        "--workers",
        default=env.get("OVERLAND_POLICY_WORKERS", "1"),
        help="server processes sharing the port (SO_REUSEPORT)",
    )
    parser.add_argument("--log-level", default=env.get("OVERLAND_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-json", action="store_true", default=env.get("OVERLAND_LOG_JSON", "") == "1")
    return parser


def _path(text: str) -> Path | None:
    return Path(text) if text else None


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> PolicyConfig:
    """The validated configuration from ``env`` (default: os.environ) and ``argv``."""
    env_of = os.environ if env is None else env
    args = _parser(env_of).parse_args(argv)
    try:
        timeout = float(args.etcd_timeout)
    except ValueError as error:
        raise InvalidPolicyConfig(
            f"invalid policy service configuration: etcd timeout {args.etcd_timeout!r} is not a number",
            [FieldViolation("etcd_timeout", "seconds")],
        ) from error
    if not str(args.workers).isdigit():
        raise InvalidPolicyConfig(
            f"invalid policy service configuration: workers {args.workers!r} is not a whole number",
            [FieldViolation("workers", "a whole number of server processes")],
        )
    workers = int(args.workers)
    tls = None
    if args.tls_cert or args.tls_key:
        tls = TlsFiles(cert=Path(args.tls_cert), key=Path(args.tls_key), ca=_path(args.tls_client_ca))
    etcd_tls = None
    if args.etcd_ca or args.etcd_cert:
        etcd_tls = TlsFiles(ca=_path(args.etcd_ca), cert=_path(args.etcd_cert), key=_path(args.etcd_key))
    config = PolicyConfig(
        server=ServerConfig(bind=args.bind, tls=tls, reuse_port=workers > 1),
        etcd=EtcdConfig(
            endpoints=tuple(e.strip() for e in args.etcd.split(",") if e.strip()),
            timeout=timeout,
            tls=etcd_tls,
        ),
        log_level=args.log_level,
        log_json=args.log_json,
        workers=workers,
        telemetry=telemetry_from_env(env_of, SERVICE_NAME),
    )
    return config.validate()
