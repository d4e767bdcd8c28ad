"""One trace per replication cycle across both sites: a primary and a DR site (in-process, on real gRPC
sockets, disks made by qemu-img) export over OTLP/gRPC to the in-process receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from overland import defaults
from overland.v1 import replica_pb2
from services.common.config import ServerConfig, TelemetryConfig
from services.replica.config import ReplicaConfig
from services.replica.server import ReplicaServer, create_server
from services.replica.telemetry import (
    APPLY_SPAN,
    COMMIT_SPAN,
    CYCLE_SECONDS,
    CYCLE_SPAN,
    DELTA_BYTES,
    LAST_SYNC_AGE,
    PENDING_BYTES,
)
from tests.integration.replica.conftest import (
    MiB,
    enable_request,
    make_disk,
    primary_stub,
    qemu_io,
    replicate_now,
    state_name,
    wait_for,
)
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.qemu

# One service, two sites: the sites of a trace are told apart by their service.instance.id.
SERVICE = defaults.REPLICA.otel_name
PRIMARY = "primary"
DR = "dr"


def _site(tmp_path: Path, name: str, endpoint: str, **options: object) -> ReplicaServer:
    config = ReplicaConfig(
        site_name=name,
        state_dir=tmp_path / f"{name}-state",
        server=ServerConfig(bind="127.0.0.1:0"),
        telemetry=TelemetryConfig(SERVICE, service_instance=name, otlp_endpoint=endpoint),
        **options,  # type: ignore[arg-type]
    )
    return create_server(config)[0]


def _one_trace(spans: list[ReceivedSpan], root: ReceivedSpan) -> dict[str, ReceivedSpan]:
    """The spans of ``root``'s trace by name (names are unique within one cycle's trace here)."""
    return {s.name: s for s in spans if s.trace_id == root.trace_id}


def test_a_replication_cycle_is_one_trace_across_both_sites(tmp_path: Path, receiver: OtlpReceiver) -> None:
    dr = _site(tmp_path, "dr", receiver.endpoint, allowed_primaries={"primary": tmp_path / "dr-store"})
    primary = _site(tmp_path, "primary", receiver.endpoint, scheduler_tick_seconds=0.2)
    try:
        disk = make_disk(tmp_path / "vm1-d0.vhd", 8 * MiB)
        qemu_io(str(disk), "write -P 0xab 0 1M")
        stub = primary_stub(primary.port)
        stub.EnableReplication(enable_request("vm1", {"d0": disk}, f"127.0.0.1:{dr.port}"), timeout=30)
        get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"), timeout=10)  # noqa: E731
        wait_for(get, lambda r: state_name(r) == "REPLICATING")
        assert primary.manager is not None
        primary.manager.device("vm1", "d0").write(2 * MiB, b"\x5a" * 65536)
        replicated = replicate_now(stub, "vm1")
        assert replicated.last_sequence == 2
    finally:
        primary.stop()
        dr.stop()

    def both_cycles(spans: list[ReceivedSpan]) -> bool:
        cycles = [s for s in spans if s.name == CYCLE_SPAN]
        return len(cycles) == 2 and all(COMMIT_SPAN in _one_trace(spans, c) for c in cycles)

    spans = receiver.wait_for(both_cycles)
    scheduled, requested = sorted(
        (s for s in spans if s.name == CYCLE_SPAN), key=lambda s: s.parent_span_id != ""
    )
    # The initial replication ran from the scheduler: its cycle is the root of its own trace.
    assert scheduled.parent_span_id == ""
    # ReplicateNow queued the delta: the cycle is a child of the primary's server span of that call.
    trace = _one_trace(spans, requested)
    assert trace["/overland.v1.ReplicaService/ReplicateNow"].span_id == requested.parent_span_id
    for cycle in (scheduled, requested):
        trace = _one_trace(spans, cycle)
        for phase in ("cut", "plan", "stream", "commit"):
            assert trace[phase].parent_span_id == cycle.span_id, phase
            assert (trace[phase].service, trace[phase].instance) == (SERVICE, PRIMARY)
        sent = [s for s in spans if s.trace_id == cycle.trace_id and s.name.endswith("/SendDelta")]
        client = next(s for s in sent if s.instance == PRIMARY)
        server = next(s for s in sent if s.instance == DR)
        assert client.parent_span_id == trace["stream"].span_id
        # The DR site joined the cycle's trace through the propagated context.
        assert server.parent_span_id == client.span_id
        apply = next(s for s in spans if s.trace_id == cycle.trace_id and s.name == APPLY_SPAN)
        commit = next(s for s in spans if s.trace_id == cycle.trace_id and s.name == COMMIT_SPAN)
        assert (apply.service, apply.instance) == (SERVICE, DR)
        assert apply.parent_span_id == server.span_id
        assert commit.parent_span_id == apply.span_id
        assert apply.attributes["overland.vm"] == "vm1"
    assert trace["stream"].attributes["overland.sequence"] == 2
    assert requested.attributes["overland.delta_bytes"] > 0
    assert {CYCLE_SECONDS, DELTA_BYTES, PENDING_BYTES, LAST_SYNC_AGE} <= receiver.metrics.names(SERVICE)
