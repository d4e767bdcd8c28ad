"""The policy service's configuration: where it listens, which etcd it uses, how it logs and traces,
and how many worker processes share its port.

``load_config`` builds it once at start from the command line and the environment (flags win; names
and defaults in ``overland.defaults``, shared flags in ``services.common.config``) and validates it
there; nothing reads the environment later. ``PolicyConfig()`` is what no flags and no environment give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from overland import defaults
from services.common.config import (
    CommandLine,
    EtcdConfig,
    LogConfig,
    ServerConfig,
    TelemetryConfig,
    check,
    seconds_violation,
)
from services.common.errors import FieldViolation

MAX_WORKERS = 32
MIB = 1024 * 1024
# What one slow watcher may hold, MiB: more is a typo (bytes for MiB), and 256 stream slots of it
# would be a memory problem long before.
MAX_WATCH_BACKLOG_MIB = 1024
WHAT = "policy service"


@dataclass(frozen=True)
class PolicyConfig:
    """``etcd.timeout`` is the deadline of every etcd call: past it a request fails UNAVAILABLE."""

    server: ServerConfig = field(default_factory=lambda: ServerConfig(bind=defaults.POLICY.address))
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Server processes sharing the port (SO_REUSEPORT): a Python process runs one core at a time,
    # and bulk loads are CPU bound in it.
    workers: int = 1
    # What a WatchTable stream holds for a client that does not keep up, and how long it waits for
    # one that reads nothing meanwhile; then the stream ends with the revision to resume from.
    watch_backlog_bytes: int = defaults.WATCH_BACKLOG_MIB * MIB
    watch_stall_seconds: float = defaults.WATCH_STALL_SECONDS
    # Where spans and metrics go; exporting nowhere (the default) runs the service untraced.
    telemetry: TelemetryConfig = field(default_factory=lambda: TelemetryConfig(defaults.POLICY.otel_name))

    def violations(self) -> list[FieldViolation]:
        found = [*self.server.violations(), *self.etcd.violations(), *self.log.violations()]
        found += self.telemetry.violations()
        if not 1 <= self.workers <= MAX_WORKERS:
            found.append(
                FieldViolation("workers", f"1 to {MAX_WORKERS} server processes, got {self.workers}")
            )
        found += seconds_violation(self.watch_stall_seconds, "watch_stall_seconds")
        if not 1 <= self.watch_backlog_bytes <= MAX_WATCH_BACKLOG_MIB * MIB:
            found.append(
                FieldViolation(
                    "watch_backlog_bytes",
                    f"1 byte to {MAX_WATCH_BACKLOG_MIB} MiB, got {self.watch_backlog_bytes}",
                )
            )
        if self.workers > 1 and (self.server.bind.endswith(":0") or not self.server.reuse_port):
            found.append(FieldViolation("workers", "several workers need a fixed port and reuse_port on"))
        if self.workers > 1 and self.telemetry.metrics_listen:
            # Each worker has its own meter: one port would show a scrape a different worker each time.
            message = "the metrics endpoint (--metrics-listen) serves one process: use --workers 1"
            found.append(FieldViolation("telemetry.metrics_listen", message))
        return found

    def validate(self) -> Self:
        check(self.violations(), WHAT)
        return self


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> PolicyConfig:
    """The validated configuration from ``argv`` (default: sys.argv) and ``env`` (default: os.environ);
    ``ConfigError`` names every bad field."""
    cli = CommandLine(defaults.POLICY, "The Overland policy service.", env)
    cli.add_server_options()
    cli.add_etcd_options()
    cli.add_log_options()
    cli.option(
        "--workers", defaults.POLICY_WORKERS_ENV, "1", "server processes sharing the port (SO_REUSEPORT)"
    )
    cli.option(
        "--watch-backlog-mib",
        defaults.POLICY_WATCH_BACKLOG_ENV,
        str(defaults.WATCH_BACKLOG_MIB),
        "MiB a WatchTable stream holds for a client that does not keep up",
    )
    cli.option(
        "--watch-stall-seconds",
        defaults.POLICY_WATCH_STALL_ENV,
        f"{defaults.WATCH_STALL_SECONDS:g}",
        "how long a full WatchTable stream waits for its client to read; then it ends, resumably",
    )
    args = cli.parse(argv)
    workers = cli.integer(args.workers, "workers")
    config = PolicyConfig(
        server=cli.server(args, reuse_port=workers > 1),
        etcd=cli.etcd(args),
        log=cli.log(args),
        workers=workers,
        watch_backlog_bytes=cli.integer(args.watch_backlog_mib, "watch_backlog_bytes") * MIB,
        watch_stall_seconds=cli.seconds(args.watch_stall_seconds, "watch_stall_seconds"),
        telemetry=cli.telemetry(defaults.POLICY.otel_name),
    )
    return cli.finish(config, WHAT)
