"""Hyper-V replication states, transitions, health and statistics (pure, property-tested)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica import states
from services.replica.states import (
    HOUR_NANOS,
    CycleOutcome,
    Event,
    Record,
    ReplicationHealth,
    ReplicationState,
    TransitionError,
    health,
    statistics,
    transition,
)

NOW = 1_800_000_000 * 10**9


def test_values_match_the_proto() -> None:
    for state in ReplicationState:
        assert replica_pb2.ReplicationState.Value(f"REPLICATION_STATE_{state.name}") == state
    for value in ReplicationHealth:
        assert replica_pb2.ReplicationHealth.Value(f"REPLICATION_HEALTH_{value.name}") == value
    assert len(ReplicationState) == 12


def test_happy_path_enable_initial_replicating() -> None:
    r = Record().apply(Event.ENABLE, NOW)
    assert r.state == ReplicationState.READY_FOR_INITIAL_REPLICATION
    r = r.apply(Event.START_INITIAL, NOW)
    assert r.state == ReplicationState.INITIAL_REPLICATION_IN_PROGRESS
    r = r.apply(Event.INITIAL_DONE, NOW + 5)
    assert r.state == ReplicationState.REPLICATING
    assert r.initial_done
    assert r.last_sync_nanos == NOW + 5


def test_external_media_waits_for_import() -> None:
    r = Record().apply(Event.ENABLE, NOW).apply(Event.START_INITIAL, NOW).apply(Event.EXPORT_DONE, NOW)
    assert r.state == ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
    assert r.apply(Event.INITIAL_DONE, NOW).state == ReplicationState.REPLICATING


def test_pause_resume_returns_to_where_it_belongs() -> None:
    r = Record().apply(Event.ENABLE, NOW)
    assert (
        r.apply(Event.PAUSE, NOW).apply(Event.RESUME, NOW).state
        == ReplicationState.READY_FOR_INITIAL_REPLICATION
    )
    done = r.apply(Event.START_INITIAL, NOW).apply(Event.INITIAL_DONE, NOW)
    paused = done.apply(Event.PAUSE, NOW + 1, "admin")
    assert paused.state == ReplicationState.SUSPENDED
    assert paused.paused_since_nanos == NOW + 1
    assert paused.apply(Event.RESUME, NOW).state == ReplicationState.REPLICATING


def test_failure_then_success_recovers() -> None:
    r = Record(state=ReplicationState.REPLICATING, initial_done=True, last_sync_nanos=NOW)
    failed = r.apply(Event.CYCLE_FAILED, NOW, "DR unreachable")
    assert failed.state == ReplicationState.CRITICAL
    assert failed.error == "DR unreachable"
    assert failed.apply(Event.CYCLE_OK, NOW).state == ReplicationState.REPLICATING
    assert failed.apply(Event.CYCLE_OK, NOW).error == ""


def test_storage_full_pauses_with_reason() -> None:
    r = Record(state=ReplicationState.REPLICATING, initial_done=True, last_sync_nanos=NOW)
    full = r.apply(Event.STORAGE_FULL, NOW, "DR site storage full")
    assert full.state == ReplicationState.SUSPENDED
    level, reasons = health(full, NOW + 60 * 10**9)
    assert level == ReplicationHealth.WARNING
    assert any("storage full" in reason for reason in reasons)


def test_invalid_transitions_raise() -> None:
    with pytest.raises(TransitionError, match="resume"):
        Record(state=ReplicationState.REPLICATING).apply(Event.RESUME, NOW)
    with pytest.raises(TransitionError):
        transition(ReplicationState.DISABLED, Event.START_RESYNC)


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_event_sequence_stays_in_known_states(events: list[Event]) -> None:
    r = Record()
    for i, event in enumerate(events, start=1):
        if event in r.allowed():
            r = r.apply(event, NOW + i)
            # Only DISABLE leads back to DISABLED.
            assert (r.state == ReplicationState.DISABLED) == (event == Event.DISABLE)
        else:
            with pytest.raises(TransitionError):
                r.apply(event, NOW + i)
        if r.state == ReplicationState.SUSPENDED:
            assert r.paused_since_nanos > 0
        if r.state in (
            ReplicationState.REPLICATING,
            ReplicationState.RESYNCHRONIZING,
            ReplicationState.RECOVERED,
        ):
            assert r.initial_done


def _cycles(flags: list[bool], latency: float = 1.0) -> tuple[CycleOutcome, ...]:
    return tuple(
        CycleOutcome(NOW - (len(flags) - i) * 30 * 10**9, ok, latency, 1000) for i, ok in enumerate(flags)
    )


REPLICATING = Record(state=ReplicationState.REPLICATING, initial_done=True, last_sync_nanos=NOW - 10**9)


def test_health_normal_at_20_percent_missed_warning_above() -> None:
    assert (
        health(replace(REPLICATING, cycles=_cycles([True] * 8 + [False] * 2)), NOW)[0]
        == ReplicationHealth.NORMAL
    )
    level, reasons = health(replace(REPLICATING, cycles=_cycles([True] * 7 + [False] * 3)), NOW)
    assert level == ReplicationHealth.WARNING
    assert "3 of 10 cycles missed" in reasons[0]


def test_health_by_last_sync_age() -> None:
    assert (
        health(replace(REPLICATING, last_sync_nanos=NOW - HOUR_NANOS + 1), NOW)[0] == ReplicationHealth.NORMAL
    )
    assert (
        health(replace(REPLICATING, last_sync_nanos=NOW - 2 * HOUR_NANOS), NOW)[0]
        == ReplicationHealth.WARNING
    )
    assert (
        health(replace(REPLICATING, last_sync_nanos=NOW - 7 * HOUR_NANOS), NOW)[0]
        == ReplicationHealth.CRITICAL
    )


def test_health_latency_resync_pause_error() -> None:
    slow = replace(REPLICATING, cycles=_cycles([True] * 3, latency=400.0))
    assert health(slow, NOW)[0] == ReplicationHealth.WARNING
    assert health(replace(REPLICATING, resync_required=True), NOW) == (
        ReplicationHealth.WARNING,
        ("resynchronization required",),
    )
    paused = replace(REPLICATING, state=ReplicationState.SUSPENDED, paused_since_nanos=NOW - 7 * HOUR_NANOS)
    assert health(paused, NOW)[0] == ReplicationHealth.CRITICAL
    assert (
        health(replace(REPLICATING, state=ReplicationState.CRITICAL, error="boom"), NOW)[0]
        == ReplicationHealth.CRITICAL
    )


@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 1000), st.integers(0, 10**9), st.booleans()), max_size=60),
    st.integers(0, 20 * HOUR_NANOS),
)
def test_statistics_match_a_direct_count(raw: list[tuple[bool, float, int, bool]], age: int) -> None:
    r = replace(REPLICATING, last_sync_nanos=NOW - age)
    for i, (ok, latency, size, overran) in enumerate(raw):
        r = r.with_cycle(CycleOutcome(NOW - (len(raw) - i) * 30 * 10**9, ok, latency, size, overran))
    stats = statistics(r, NOW)
    assert stats.total_cycles == len(raw)
    assert stats.missed_cycles == sum(1 for ok, _l, _s, over in raw if not ok or over)
    good = [(latency, size) for ok, latency, size, _o in raw if ok]
    assert stats.average_delta_bytes == (sum(s for _l, s in good) // len(good) if good else 0)
    level, reasons = health(r, NOW)
    # Normal exactly when no rule fires.
    assert (level == ReplicationHealth.NORMAL) == (not reasons)
    if age > 6 * HOUR_NANOS:
        assert level == ReplicationHealth.CRITICAL


def test_history_keeps_only_the_monitoring_window() -> None:
    r = REPLICATING
    for i in range(2000):
        r = r.with_cycle(CycleOutcome(NOW + i * 30 * 10**9, True, 1.0, 1))
    assert len(r.cycles) <= states.MAX_CYCLE_HISTORY
    assert r.cycles[-1].start_nanos == NOW + 1999 * 30 * 10**9
