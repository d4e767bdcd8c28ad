"""The vswitch agent's traces and metrics: one "apply" span per applied table change, in the trace of the
policy write that caused it, and the propagation-lag and datapath metrics.

The lag figures are pure functions of a ``TableDelta`` and the clock; the span and the instruments are
thin wrappers over them. Nothing here runs per packet: datapath figures are read from the datapath's
own counters when the meter collects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import Tracer

from overland.v1 import vswitch_pb2
from services.common.table import TableDelta
from services.common.telemetry import child_or_linked_span

APPLY_SPAN = "vswitch.apply"
LAG_SECONDS = "overland.vswitch.propagation.lag"
LAG_REVISIONS = "overland.vswitch.propagation.lag.revisions"
APPLIED_REVISION = "overland.vswitch.applied.revision"
PACKETS = "overland.vswitch.datapath.packets"
BYTES = "overland.vswitch.datapath.bytes"
DROPS = "overland.vswitch.datapath.drops"
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def oldest_write_ns(delta: TableDelta) -> int | None:
    """The write time of the oldest change a delta applies (None when no change carries one).

    Deletes carry no write time of their own (etcd keeps no value for them), so they do not count.
    """
    times = [c.after.write_time_unix_nanos for c in delta.changes if c.after is not None]
    stamped = [t for t in times if t > 0]
    return min(stamped) if stamped else None


def lag_seconds(delta: TableDelta, now_ns: int) -> float | None:
    """How long the oldest write of a delta took to be applied here; None for a cold sync (its
    entries may be days old: that is not propagation) or when no change carries a write time."""
    if delta.reset:
        return None
    oldest = oldest_write_ns(delta)
    if oldest is None:
        return None
    # Clocks of two hosts may disagree a little: a negative lag is noise, not time travel.
    return max(0.0, (now_ns - oldest) / 1e9)


def lag_revisions(seen_revision: int, applied_revision: int) -> int:
    """Revisions the agent has been told about (by any watch stream) but not yet applied."""
    return max(0, seen_revision - applied_revision)


def packet_observations(counters: vswitch_pb2.Counters, host: str) -> list[tuple[str, int, dict[str, str]]]:
    """The datapath counters as (instrument, value, attributes) rows, drops by reason."""
    rows: list[tuple[str, int, dict[str, str]]] = [
        (PACKETS, counters.rx_packets, {"overland.host": host, "direction": "rx"}),
        (PACKETS, counters.tx_packets, {"overland.host": host, "direction": "tx"}),
        (BYTES, counters.rx_bytes, {"overland.host": host, "direction": "rx"}),
        (BYTES, counters.tx_bytes, {"overland.host": host, "direction": "tx"}),
    ]
    drops = sorted(counters.drops.items())
    rows += [(DROPS, n, {"overland.host": host, "reason": reason}) for reason, n in drops]
    return rows


@dataclass(frozen=True)
class AgentProbes:
    """What the metric callbacks read from a running agent."""

    revisions: Callable[[], tuple[int, int]]
    """(seen, applied) revisions."""
    counters: Callable[[], vswitch_pb2.Counters] | None
    """The datapath's counters; None for a table-only agent."""


class AgentTelemetry:
    """The spans and instruments of one agent (``host``)."""

    def __init__(self, tracer: Tracer, meter: Meter, host: str):
        self._tracer = tracer
        self._host = host
        self._meter = meter
        self._lag = meter.create_histogram(
            LAG_SECONDS,
            unit="s",
            description="time from a policy write to its application on this host",
            # Seconds, not the SDK's default buckets (0, 5, 10, 25 ... 10000: made for milliseconds),
            # so that a quantile of a lag of milliseconds says something (alerts use it).
            explicit_bucket_boundaries_advisory=LAG_BUCKETS,
        )

    @contextmanager
    def applying(self, delta: TableDelta, change_revision: int, now_ns: Callable[[], int]) -> Iterator[None]:
        """Wrap the application of one table change: its span, then its lag sample.

        ``change_revision`` is the etcd revision of the newest change applied (the write's revision);
        the delta's own revision is the table's applied revision, which may trail it while another
        watch stream catches up.

        Progress-only revisions (no change) get no span: they would make one trace-less root span per
        progress notification.
        """
        if not delta.changes:
            yield
            return
        causes = [c.after.trace for c in delta.changes if c.after is not None]
        attributes = {
            "overland.host": self._host,
            "overland.revision": change_revision,
            "overland.applied_revision": delta.revision,
            "overland.events": len(delta),
            "overland.reset": delta.reset,
        }
        with child_or_linked_span(self._tracer, APPLY_SPAN, causes, attributes):
            yield
        lag = lag_seconds(delta, now_ns())
        if lag is not None:
            self._lag.record(lag, {"overland.host": self._host})

    def observe(self, probes: AgentProbes) -> None:
        """Register the observable instruments that read ``probes`` at each collection."""
        host = {"overland.host": self._host}

        def lag(_options: CallbackOptions) -> Iterable[Observation]:
            seen, applied = probes.revisions()
            return [Observation(lag_revisions(seen, applied), host)]

        def applied(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(probes.revisions()[1], host)]

        self._meter.create_observable_gauge(
            LAG_REVISIONS, [lag], unit="{revision}", description="revisions seen but not yet applied"
        )
        self._meter.create_observable_gauge(APPLIED_REVISION, [applied], unit="{revision}")
        read = probes.counters
        if read is None:
            return

        def rows(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(_options: CallbackOptions) -> Iterable[Observation]:
                return [Observation(v, a) for n, v, a in packet_observations(read(), self._host) if n == name]

            return callback

        self._meter.create_observable_counter(PACKETS, [rows(PACKETS)], unit="{packet}")
        self._meter.create_observable_counter(BYTES, [rows(BYTES)], unit="By")
        self._meter.create_observable_counter(DROPS, [rows(DROPS)], unit="{packet}")
