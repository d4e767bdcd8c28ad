"""The replica service's traces and metrics.

A replication cycle is one trace: a ``replica.cycle`` span at the primary with a span per phase (cut,
plan, stream, commit); the calls to the DR site carry the trace context, so the DR site's server span
and its ``replica.apply`` / ``replica.commit`` spans join the same trace.

Metrics: delta size and cycle duration (histograms, recorded per cycle), cycles that missed their RPO
(counter: failed, or slower than the replication frequency), and per VM, read when the meter collects:
pending bytes, the age of the last sync, whether the RPO is violated now and the replication's health;
at a DR site, the recovery points it keeps per (primary, VM).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.trace import Tracer

from overland.v1 import replica_pb2
from services.common.telemetry import Telemetry, tracer_of
from services.replica.settings import DEFAULT_FREQUENCY

CYCLE_SPAN = "replica.cycle"
APPLY_SPAN = "replica.apply"
COMMIT_SPAN = "replica.commit"
DELTA_BYTES = "overland.replica.delta.size"
CYCLE_SECONDS = "overland.replica.cycle.duration"
RPO_MISSES = "overland.replica.rpo.violations"
PENDING_BYTES = "overland.replica.pending"
LAST_SYNC_AGE = "overland.replica.last_sync.age"
RPO_VIOLATED = "overland.replica.rpo.violated"
HEALTH = "overland.replica.health"
RECOVERY_POINTS = "overland.replica.recovery_points"
# The health gauge's values: an alert compares with a number (Prometheus has no enums).
HEALTH_VALUES = {
    replica_pb2.REPLICATION_HEALTH_NORMAL: 0,
    replica_pb2.REPLICATION_HEALTH_WARNING: 1,
    replica_pb2.REPLICATION_HEALTH_CRITICAL: 2,
}


def missed_rpo(ok: bool, seconds: float, frequency_seconds: int) -> bool:
    """Whether a cycle counts against the RPO: it failed, or took longer than its interval (Hyper-V
    counts an overrun cycle as missed even when it succeeded)."""
    return not ok or seconds > frequency_seconds


def last_sync_age(last_sync_nanos: int, now_nanos: int) -> float | None:
    """Seconds since the last successful sync; None before the first one."""
    if last_sync_nanos <= 0:
        return None
    return max(0.0, (now_nanos - last_sync_nanos) / 1e9)


def rpo_violated(last_sync_nanos: int, now_nanos: int, frequency_seconds: int) -> bool | None:
    """Whether the DR copy is now older than the replication frequency allows (with one interval of
    grace for the cycle that is running); None before the first sync."""
    age = last_sync_age(last_sync_nanos, now_nanos)
    return None if age is None else age > 2 * frequency_seconds


class ReplicaTelemetry:
    """Spans and instruments of one replica service (either role)."""

    def __init__(self, telemetry: Telemetry | None):
        self._telemetry = telemetry
        self.tracer: Tracer = tracer_of(telemetry)
        meter: Meter = telemetry.meter if telemetry is not None else NoOpMeter("overland")
        self._meter = meter
        self._delta_bytes = meter.create_histogram(DELTA_BYTES, unit="By", description="bytes per delta")
        self._cycle_seconds = meter.create_histogram(
            CYCLE_SECONDS, unit="s", description="a replication cycle from cut to commit"
        )
        self._rpo_misses = meter.create_counter(
            RPO_MISSES, unit="{cycle}", description="cycles that failed or overran their interval"
        )

    def channel(self, channel: grpc.Channel) -> grpc.Channel:
        """A channel to the DR site whose calls carry the cycle's trace context."""
        return self._telemetry.instrument_channel(channel) if self._telemetry is not None else channel

    @contextmanager
    def cycle(
        self, vm: str, frequency_seconds: int, delta_bytes: Callable[[], int], clock: Callable[[], float]
    ) -> Iterator[None]:
        """One cycle's root span and its metrics. ``delta_bytes`` is read once the cycle is over."""
        attributes = {"overland.vm": vm}
        started = clock()
        ok = False
        with self.tracer.start_as_current_span(CYCLE_SPAN, attributes=attributes) as span:
            try:
                yield
                ok = True
            finally:
                seconds = clock() - started
                size = delta_bytes()
                span.set_attribute("overland.delta_bytes", size)
                self._cycle_seconds.record(seconds, {**attributes, "ok": ok})
                if ok:
                    self._delta_bytes.record(size, attributes)
                if missed_rpo(ok, seconds, frequency_seconds):
                    self._rpo_misses.add(1, attributes)

    @staticmethod
    def caller() -> object:
        """The trace context of the calling thread (a ReplicateNow call), for ``within``."""
        return otel_context.get_current()

    @staticmethod
    @contextmanager
    def within(context: object | None) -> Iterator[None]:
        """Run in ``context`` (from ``caller``, in another thread): a cycle ReplicateNow queued is a
        child of that call's span, as if the call had run it."""
        token = otel_context.attach(context) if context is not None else None  # type: ignore[arg-type]
        try:
            yield
        finally:
            if token is not None:
                otel_context.detach(token)

    @contextmanager
    def phase(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
        """A phase of a cycle (cut, plan, stream, commit) or of a receipt (apply, commit)."""
        with self.tracer.start_as_current_span(name, attributes=attributes):
            yield

    def observe(self, replications: Callable[[], Sequence[replica_pb2.Replication]]) -> None:
        """Per-VM gauges read from ``replications`` (the manager's views) at each collection."""

        def rows(options: CallbackOptions) -> list[tuple[str, float, dict[str, str]]]:
            return replication_rows(replications(), time.time_ns())

        def gauge(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                return [Observation(v, a) for n, v, a in rows(options) if n == name]

            return callback

        self._meter.create_observable_gauge(PENDING_BYTES, [gauge(PENDING_BYTES)], unit="By")
        self._meter.create_observable_gauge(LAST_SYNC_AGE, [gauge(LAST_SYNC_AGE)], unit="s")
        self._meter.create_observable_gauge(RPO_VIOLATED, [gauge(RPO_VIOLATED)], unit="1")
        self._meter.create_observable_gauge(
            HEALTH, [gauge(HEALTH)], description="0 normal, 1 warning, 2 critical (as GetReplication)"
        )

    def observe_points(self, counts: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """The DR site's gauge of recovery points per (primary, VM), from ``counts`` at each collection."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(n, {"overland.primary": primary, "overland.vm": vm})
                for primary, vm, n in counts()
            ]

        self._meter.create_observable_gauge(
            RECOVERY_POINTS, [callback], unit="{point}", description="recovery points kept at this site"
        )


def replication_rows(
    replications: Sequence[replica_pb2.Replication], now_nanos: int
) -> list[tuple[str, float, dict[str, str]]]:
    """The per-VM gauge values as (instrument, value, attributes) rows."""
    rows: list[tuple[str, float, dict[str, str]]] = []
    for replication in replications:
        vm = {"overland.vm": replication.vm.name}
        stats = replication.statistics
        rows.append((PENDING_BYTES, stats.pending_bytes, vm))
        age = last_sync_age(stats.last_sync_unix_nanos, now_nanos)
        frequency = replication.settings.frequency_seconds or DEFAULT_FREQUENCY
        violated = rpo_violated(stats.last_sync_unix_nanos, now_nanos, frequency)
        if age is not None:
            rows.append((LAST_SYNC_AGE, age, vm))
        if violated is not None:
            rows.append((RPO_VIOLATED, int(violated), vm))
        if replication.health in HEALTH_VALUES:
            rows.append((HEALTH, HEALTH_VALUES[replication.health], vm))
    return rows
