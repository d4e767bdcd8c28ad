"""The agent's apply spans and lag metrics: the lag arithmetic (property-tested) and one change's span."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint

from overland.v1 import types_pb2, vswitch_pb2
from services.common.config import TelemetryConfig
from services.common.table import EntryChange, TableDelta
from services.common.telemetry import Telemetry, current_trace_context
from services.vswitch.telemetry import (
    DROPS,
    LAG_REVISIONS,
    LAG_SECONDS,
    PACKETS,
    AgentProbes,
    AgentTelemetry,
    lag_revisions,
    lag_seconds,
    oldest_write_ns,
    packet_observations,
)


def _change(n: int, write_ns: int, trace: types_pb2.TraceContext | None = None) -> EntryChange:
    record = types_pb2.LookupRecord(vsid=5001, ca=f"192.0.2.{n}", pa="198.18.0.1")
    entry = types_pb2.StoreEntry(lookup_record=record, write_time_unix_nanos=write_ns)
    if trace is not None:
        entry.trace.CopyFrom(trace)
    return EntryChange(f"/k/{n}".encode(), "record", None, entry)


@given(st.lists(st.integers(min_value=0, max_value=2**62), max_size=20), st.integers(0, 2**62))
def test_lag_is_that_of_the_oldest_stamped_write(times: list[int], now: int) -> None:
    delta = TableDelta(7, tuple(_change(i, t) for i, t in enumerate(times)))
    stamped = [t for t in times if t > 0]
    lag = lag_seconds(delta, now)
    if not stamped:
        assert lag is None
        assert oldest_write_ns(delta) is None
    else:
        assert lag == max(0.0, (now - min(stamped)) / 1e9)


def test_a_cold_sync_is_not_propagation() -> None:
    delta = TableDelta(7, (_change(1, 10),), reset=True)
    assert lag_seconds(delta, 10**12) is None


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_revision_lag_never_negative(seen: int, applied: int) -> None:
    assert lag_revisions(seen, applied) == max(0, seen - applied)


def test_counters_become_rows_with_drops_by_reason() -> None:
    counters = vswitch_pb2.Counters(rx_packets=3, tx_packets=4, rx_bytes=300, tx_bytes=400)
    counters.drops["wrong_vsid"] = 2
    rows = packet_observations(counters, "h1")
    assert (DROPS, 2, {"overland.host": "h1", "reason": "wrong_vsid"}) in rows
    assert (PACKETS, 4, {"overland.host": "h1", "direction": "tx"}) in rows


def test_apply_span_joins_the_write_and_lag_is_recorded(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        TelemetryConfig("vswitch", span_file=str(tmp_path / "s.jsonl"), synchronous=True),
        metric_readers=[reader],
    )
    agent = AgentTelemetry(telemetry.tracer, telemetry.meter, "h1")
    agent.observe(AgentProbes(revisions=lambda: (12, 9), counters=None))
    with telemetry.tracer.start_as_current_span("write") as write:
        context = current_trace_context()
    delta = TableDelta(9, (_change(1, 1_000_000_000, context), _change(2, 2_000_000_000, context)))
    with agent.applying(delta, 11, lambda: 3_500_000_000):
        pass
    with agent.applying(TableDelta(10), 11, lambda: 4_000_000_000):
        pass
    exported = reader.get_metrics_data()
    assert exported is not None
    metrics = {m.name: m for rm in exported.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    telemetry.shutdown()
    spans = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    applies = [s for s in spans if s["name"] == "vswitch.apply"]
    assert len(applies) == 1, "a progress-only revision gets no span"
    assert applies[0]["trace_id"] == f"{write.get_span_context().trace_id:032x}"
    assert applies[0]["attributes"] == {
        "overland.host": "h1",
        "overland.revision": 11,
        "overland.applied_revision": 9,
        "overland.events": 2,
        "overland.reset": False,
    }
    histogram = metrics[LAG_SECONDS].data.data_points[0]
    assert isinstance(histogram, HistogramDataPoint)
    assert histogram.count == 1
    assert histogram.sum == 2.5
    revisions = metrics[LAG_REVISIONS].data.data_points[0]
    assert isinstance(revisions, NumberDataPoint)
    assert revisions.value == 3
