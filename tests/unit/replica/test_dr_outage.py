"""A DR site that does not answer: the capped backoff with jitter (property-tested), how a delta keeps
retrying through an outage and resumes where the DR site is, and what health says meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.errors import ReplicaUnreachable
from services.replica.primary import sender as sender_module
from services.replica.primary.sender import MAX_BACKOFF_SECONDS, Sender, backoff
from services.replica.states import Event, Record, ReplicationHealth, health


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=0, max_value=1, exclude_max=True))
def test_backoff_is_capped_at_a_second_and_jittered(failures: int, unit: float) -> None:
    wait = backoff(failures, unit)
    ceiling = min(MAX_BACKOFF_SECONDS, 0.2 * 2 ** min(failures - 1, 16))
    assert ceiling / 2 - 1e-12 <= wait <= ceiling
    # Never longer than the one before it with the same luck: backoff only grows to its cap.
    assert backoff(failures + 1, unit) >= wait


class Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "down"):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeDr:
    """A DR site that does not answer for ``down`` calls of any kind, then answers; it has staged
    ``staged`` chunks of the delta."""

    def __init__(self, down: int, staged: int = 7):
        self.down = down
        self.staged = staged
        self.sends: list[int] = []
        self.probes = 0

    def _maybe_down(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise Failure(grpc.StatusCode.UNAVAILABLE, "connection refused")

    def GetReceiverState(self, request: Any, **_: Any) -> replica_pb2.ReceiverState:
        self.probes += 1
        self._maybe_down()
        return replica_pb2.ReceiverState(vm_name="vm1", staged_sequence=3, staged_chunks=self.staged)

    def send_delta(self, messages: Iterator[Any], **_: Any) -> replica_pb2.DeltaAck:
        header = next(iter(messages))
        self.sends.append(header.header.resume_from)
        self._maybe_down()
        return replica_pb2.DeltaAck(sequence=3)


def sender_for(dr: FakeDr, reports: list[str | None]) -> Sender:
    return Sender(
        dr,  # type: ignore[arg-type]
        (),
        threading.Event(),
        dr.send_delta,  # type: ignore[arg-type]
        reports.append,
        random=lambda: 0.999,
    )


def stream(header: replica_pb2.DeltaHeader) -> Iterator[replica_pb2.DeltaMessage]:
    yield replica_pb2.DeltaMessage(header=header)


def test_a_delta_waits_out_an_outage_then_resumes_where_the_dr_site_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_module, "FIRST_BACKOFF_SECONDS", 0.001)
    monkeypatch.setattr(sender_module, "MAX_BACKOFF_SECONDS", 0.002)
    # Down for more calls than MAX_ATTEMPTS: an outage shorter than OUTAGE_SECONDS does not fail it.
    dr = FakeDr(down=sender_module.MAX_ATTEMPTS + 4)
    reports: list[str | None] = []
    ack = sender_for(dr, reports).send(replica_pb2.DeltaHeader(vm_name="vm1", sequence=3), stream, 0)
    assert ack.sequence == 3
    # One send failed; then the DR site was only probed until it answered, and the delta resumed from
    # the chunks it had staged (not from 0).
    assert dr.sends == [0, 7]
    assert dr.probes >= sender_module.MAX_ATTEMPTS
    assert reports[0] is not None
    assert "UNAVAILABLE" in reports[0]
    assert reports[-1] is None


def test_an_outage_longer_than_the_window_fails_the_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender_module, "FIRST_BACKOFF_SECONDS", 0.001)
    monkeypatch.setattr(sender_module, "MAX_BACKOFF_SECONDS", 0.002)
    monkeypatch.setattr(sender_module, "OUTAGE_SECONDS", 0.0)
    dr = FakeDr(down=10**6)
    with pytest.raises(ReplicaUnreachable, match="UNAVAILABLE"):
        sender_for(dr, []).send(replica_pb2.DeltaHeader(vm_name="vm1", sequence=3), stream, 0)
    assert dr.sends == [0]


def test_health_explains_an_outage_while_it_lasts() -> None:
    enabled = Record().apply(Event.ENABLE, 0).apply(Event.START_INITIAL, 1).apply(Event.INITIAL_DONE, 2)
    outage = "the DR site dr:50053 has not answered for 12 s (UNAVAILABLE: connection refused)"
    level, reasons = health(enabled, 3, outage)
    assert (level, reasons) == (ReplicationHealth.WARNING, (outage,))
    failed = enabled.apply(Event.CYCLE_FAILED, 4, "DR site error while ...: UNAVAILABLE: refused")
    level, reasons = health(failed, 5, outage)
    assert level == ReplicationHealth.CRITICAL
    # The outage comes first: it says what the error below it means and that it will pass.
    assert reasons[0] == outage
    assert reasons[1].startswith("replication is in error")
    assert health(enabled, 3) == (ReplicationHealth.NORMAL, ())
