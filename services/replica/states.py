"""Hyper-V Replica's replication states, their transitions, health rules and statistics — pure, no I/O.

The state values equal ``overland.v1.ReplicationState`` so a state converts to the proto with ``int()``.

Health thresholds (Hyper-V's documented replication health rules, Windows Server 2012/2012 R2, with the
monitoring interval of 12 hours it uses by default):

* Normal   — at most 20% of the cycles in the monitoring window missed, the last successful sync under
  1 hour ago, and the average cycle latency at most 5 minutes.
* Warning  — more than 20% of cycles missed, or the last sync between 1 and 6 hours ago, or the average
  latency above 5 minutes, or resynchronization required, or replication paused, or initial
  replication not complete yet.
* Critical — the last sync more than 6 hours ago, or the replication in error (state CRITICAL, e.g. the
  DR site refused the data or cannot be reached), or replication paused for more than 6 hours.

A cycle is "missed" when it failed or did not finish within its own interval (Hyper-V counts a cycle
that overran its frequency as missed).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

NANOS = 1_000_000_000
HOUR_NANOS = 3600 * NANOS
MONITORING_WINDOW_NANOS = 12 * HOUR_NANOS
WARNING_SYNC_AGE_NANOS = 1 * HOUR_NANOS
CRITICAL_SYNC_AGE_NANOS = 6 * HOUR_NANOS
CRITICAL_PAUSE_NANOS = 6 * HOUR_NANOS
MAX_MISSED_FRACTION = 0.20
MAX_AVERAGE_LATENCY_SECONDS = 300.0
# Bounded so a VM replicating every 30 s keeps its full 12 h window (1440 cycles) and no more.
MAX_CYCLE_HISTORY = 1500


class ReplicationState(enum.IntEnum):
    """Hyper-V's 12 replication states (values of ``overland.v1.ReplicationState``)."""

    DISABLED = 1
    READY_FOR_INITIAL_REPLICATION = 2
    INITIAL_REPLICATION_IN_PROGRESS = 3
    WAITING_FOR_INITIAL_REPLICATION = 4
    REPLICATING = 5
    SYNCED_REPLICATION_COMPLETE = 6
    RECOVERED = 7
    COMMITED = 8
    SUSPENDED = 9
    CRITICAL = 10
    WAITING_TO_COMPLETE_INITIAL_REPLICATION = 11
    RESYNCHRONIZING = 12


class ReplicationHealth(enum.IntEnum):
    """Values of ``overland.v1.ReplicationHealth``."""

    NORMAL = 1
    WARNING = 2
    CRITICAL = 3


class Event(enum.Enum):
    """What happens to a replication; ``transition`` maps (state, event) to the next state."""

    ENABLE = "enable"
    START_INITIAL = "start_initial"
    EXPORT_DONE = "export_done"
    INITIAL_DONE = "initial_done"
    CYCLE_STARTED = "cycle_started"
    CYCLE_OK = "cycle_ok"
    CYCLE_FAILED = "cycle_failed"
    PAUSE = "pause"
    RESUME = "resume"
    START_RESYNC = "start_resync"
    RESYNC_DONE = "resync_done"
    STORAGE_FULL = "storage_full"
    PLANNED_FAILOVER = "planned_failover"
    FAILOVER = "failover"
    COMMIT_FAILOVER = "commit_failover"
    CANCEL_FAILOVER = "cancel_failover"
    DISABLE = "disable"


S = ReplicationState
_ACTIVE = frozenset({S.REPLICATING, S.CRITICAL})
_IN_TRANSFER = frozenset({S.INITIAL_REPLICATION_IN_PROGRESS, S.RESYNCHRONIZING})
_PAUSABLE = frozenset(
    {
        S.READY_FOR_INITIAL_REPLICATION,
        S.INITIAL_REPLICATION_IN_PROGRESS,
        S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
        S.REPLICATING,
        S.CRITICAL,
        S.RESYNCHRONIZING,
    }
)

# (state, event) -> next state. RESUME is absent: where it goes depends on the record (see ``resume``).
_TABLE: dict[tuple[ReplicationState, Event], ReplicationState] = {
    (S.DISABLED, Event.ENABLE): S.READY_FOR_INITIAL_REPLICATION,
    (S.READY_FOR_INITIAL_REPLICATION, Event.START_INITIAL): S.INITIAL_REPLICATION_IN_PROGRESS,
    (S.CRITICAL, Event.START_INITIAL): S.INITIAL_REPLICATION_IN_PROGRESS,
    (S.INITIAL_REPLICATION_IN_PROGRESS, Event.EXPORT_DONE): S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
    (S.INITIAL_REPLICATION_IN_PROGRESS, Event.INITIAL_DONE): S.REPLICATING,
    (S.WAITING_TO_COMPLETE_INITIAL_REPLICATION, Event.INITIAL_DONE): S.REPLICATING,
    (S.INITIAL_REPLICATION_IN_PROGRESS, Event.CYCLE_FAILED): S.CRITICAL,
    (S.RESYNCHRONIZING, Event.CYCLE_FAILED): S.CRITICAL,
    (S.REPLICATING, Event.CYCLE_STARTED): S.REPLICATING,
    (S.CRITICAL, Event.CYCLE_STARTED): S.CRITICAL,
    (S.REPLICATING, Event.CYCLE_OK): S.REPLICATING,
    (S.CRITICAL, Event.CYCLE_OK): S.REPLICATING,
    (S.REPLICATING, Event.CYCLE_FAILED): S.CRITICAL,
    (S.CRITICAL, Event.CYCLE_FAILED): S.CRITICAL,
    (S.REPLICATING, Event.START_RESYNC): S.RESYNCHRONIZING,
    (S.CRITICAL, Event.START_RESYNC): S.RESYNCHRONIZING,
    (S.RESYNCHRONIZING, Event.RESYNC_DONE): S.REPLICATING,
    (S.REPLICATING, Event.PLANNED_FAILOVER): S.SYNCED_REPLICATION_COMPLETE,
    (S.WAITING_FOR_INITIAL_REPLICATION, Event.INITIAL_DONE): S.REPLICATING,
    (S.REPLICATING, Event.FAILOVER): S.RECOVERED,
    (S.CRITICAL, Event.FAILOVER): S.RECOVERED,
    (S.SYNCED_REPLICATION_COMPLETE, Event.FAILOVER): S.RECOVERED,
    (S.RECOVERED, Event.COMMIT_FAILOVER): S.COMMITED,
    (S.SYNCED_REPLICATION_COMPLETE, Event.CANCEL_FAILOVER): S.REPLICATING,
    **{(state, Event.PAUSE): S.SUSPENDED for state in _PAUSABLE},
    **{(state, Event.STORAGE_FULL): S.SUSPENDED for state in _PAUSABLE | {S.SUSPENDED}},
    **{(state, Event.DISABLE): S.DISABLED for state in ReplicationState},
}


# Delta cycles, resync and failover need a complete initial replica to build on.
_NEED_INITIAL = frozenset(
    {Event.CYCLE_STARTED, Event.CYCLE_OK, Event.START_RESYNC, Event.PLANNED_FAILOVER, Event.FAILOVER}
)


class TransitionError(ValueError):
    """The event is not allowed in the state; the caller turns it into FAILED_PRECONDITION."""

    def __init__(self, state: ReplicationState, event: Event):
        super().__init__(f"cannot {event.value.replace('_', ' ')} while replication is {_words(state)}")
        self.state = state
        self.event = event


def _words(state: ReplicationState) -> str:
    return state.name.lower().replace("_", " ")


def transition(state: ReplicationState, event: Event) -> ReplicationState:
    """The next state, or ``TransitionError``. RESUME needs the record: use ``Record.apply``."""
    try:
        return _TABLE[(state, event)]
    except KeyError:
        raise TransitionError(state, event) from None


def allowed_events(state: ReplicationState) -> frozenset[Event]:
    """Every event ``transition`` accepts in ``state`` (RESUME included for SUSPENDED)."""
    events = {event for (s, event) in _TABLE if s == state}
    if state == S.SUSPENDED:
        events.add(Event.RESUME)
    return frozenset(events)


@dataclass(frozen=True)
class CycleOutcome:
    """One replication cycle as the statistics need it."""

    start_nanos: int
    ok: bool
    latency_seconds: float
    delta_bytes: int
    # True when the cycle overran its interval: Hyper-V counts it as missed even if it succeeded.
    overran: bool = False

    @property
    def missed(self) -> bool:
        return not self.ok or self.overran


@dataclass(frozen=True)
class Statistics:
    """Per-VM statistics (``overland.v1.ReplicationStatistics``), derived from the cycle history."""

    last_sync_nanos: int
    pending_bytes: int
    average_delta_bytes: int
    missed_cycles: int
    total_cycles: int
    average_latency_seconds: float
    # The last cycle that succeeded: when it ended, what it sent, how long it took (zeros before one).
    last_cycle_end_nanos: int = 0
    last_cycle_bytes: int = 0
    last_cycle_seconds: float = 0.0


@dataclass(frozen=True)
class Record:
    """Everything the pure rules know about one VM's replication."""

    state: ReplicationState = S.DISABLED
    initial_done: bool = False
    resync_required: bool = False
    paused_since_nanos: int = 0
    last_sync_nanos: int = 0
    pending_bytes: int = 0
    enabled_nanos: int = 0
    error: str = ""
    cycles: tuple[CycleOutcome, ...] = field(default_factory=tuple)

    def apply(self, event: Event, now_nanos: int, reason: str = "") -> Record:
        """The record after ``event`` at ``now_nanos``; ``reason`` explains failures and pauses."""
        if event == Event.RESUME:
            return self._resume()
        if event in _NEED_INITIAL and not self.initial_done:
            raise TransitionError(self.state, event)
        state = transition(self.state, event)
        changes: dict[str, object] = {"state": state}
        if event == Event.ENABLE:
            changes.update(enabled_nanos=now_nanos, initial_done=False, error="")
        if event in (Event.INITIAL_DONE, Event.RESYNC_DONE, Event.CYCLE_OK):
            changes.update(error="", last_sync_nanos=now_nanos)
        if event == Event.INITIAL_DONE:
            changes["initial_done"] = True
        if event == Event.RESYNC_DONE:
            changes["resync_required"] = False
        if event in (Event.CYCLE_FAILED, Event.STORAGE_FULL):
            changes["error"] = reason
        if state == S.SUSPENDED and self.state != S.SUSPENDED:
            changes["paused_since_nanos"] = now_nanos
        if event == Event.PAUSE:
            changes["error"] = reason
        return replace(self, **changes)  # type: ignore[arg-type]

    def allowed(self) -> frozenset[Event]:
        """The events ``apply`` accepts now."""
        events = allowed_events(self.state)
        return events if self.initial_done else events - _NEED_INITIAL

    def _resume(self) -> Record:
        if self.state != S.SUSPENDED:
            raise TransitionError(self.state, Event.RESUME)
        state = S.REPLICATING if self.initial_done else S.READY_FOR_INITIAL_REPLICATION
        return replace(self, state=state, paused_since_nanos=0, error="")

    def with_cycle(self, outcome: CycleOutcome) -> Record:
        """Adds a cycle to the history, keeping only the monitoring window (and at most MAX_CYCLE_HISTORY)."""
        horizon = outcome.start_nanos - MONITORING_WINDOW_NANOS
        kept = [c for c in self.cycles if c.start_nanos > horizon]
        kept.append(outcome)
        return replace(self, cycles=tuple(kept[-MAX_CYCLE_HISTORY:]))

    @property
    def needs_initial(self) -> bool:
        return not self.initial_done

    @property
    def schedulable(self) -> bool:
        """Whether the scheduler should run cycles (not paused, disabled or failed over)."""
        return self.state in _ACTIVE | _IN_TRANSFER | {
            S.READY_FOR_INITIAL_REPLICATION,
            S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
        }


def statistics(record: Record, now_nanos: int) -> Statistics:
    """Statistics over the cycles of the monitoring window ending at ``now_nanos``."""
    window = _window(record.cycles, now_nanos)
    succeeded = [c for c in window if c.ok]
    last = next((c for c in reversed(record.cycles) if c.ok), None)
    return Statistics(
        last_sync_nanos=record.last_sync_nanos,
        pending_bytes=record.pending_bytes,
        average_delta_bytes=(sum(c.delta_bytes for c in succeeded) // len(succeeded)) if succeeded else 0,
        missed_cycles=sum(1 for c in window if c.missed),
        total_cycles=len(window),
        average_latency_seconds=(sum(c.latency_seconds for c in succeeded) / len(succeeded))
        if succeeded
        else 0.0,
        last_cycle_end_nanos=last.start_nanos + int(last.latency_seconds * NANOS) if last else 0,
        last_cycle_bytes=last.delta_bytes if last else 0,
        last_cycle_seconds=last.latency_seconds if last else 0.0,
    )


def _window(cycles: Iterable[CycleOutcome], now_nanos: int) -> list[CycleOutcome]:
    horizon = now_nanos - MONITORING_WINDOW_NANOS
    return [c for c in cycles if c.start_nanos > horizon]


def health(
    record: Record,
    now_nanos: int,
    outage: str = "",
    faults: Sequence[str] = (),
    resync_reason: str = "",
) -> tuple[ReplicationHealth, tuple[str, ...]]:
    """Hyper-V's health for the record at ``now_nanos``, with every reason that is not Normal.
    ``outage`` says why the DR site does not answer now (a warning at least, while a cycle retries;
    a cycle that failed for it made the state CRITICAL already); ``faults`` are critical whatever
    the state (a disk file another VM owns); ``resync_reason`` says why a resync is required.
    A required resync is a warning: the next cycle makes the DR copy exact again."""
    stats = statistics(record, now_nanos)
    critical: list[str] = list(faults)
    warning: list[str] = []
    if record.state == S.DISABLED:
        return ReplicationHealth.NORMAL, ()
    if outage:
        (critical if record.state == S.CRITICAL else warning).append(outage)
    if record.state == S.CRITICAL:
        critical.append(f"replication is in error: {record.error}" if record.error else "replication error")
    if record.state == S.SUSPENDED:
        paused_for = now_nanos - record.paused_since_nanos
        why = f": {record.error}" if record.error else ""
        if paused_for > CRITICAL_PAUSE_NANOS:
            critical.append(f"replication paused for {_hours(paused_for)}{why}")
        else:
            warning.append(f"replication paused{why}")
    if record.resync_required or resync_reason:
        warning.append(
            f"resynchronization required: {resync_reason}" if resync_reason else "resynchronization required"
        )
    if not record.initial_done:
        warning.append("initial replication not complete")
    since = record.last_sync_nanos or record.enabled_nanos
    age = now_nanos - since
    if record.initial_done and age > CRITICAL_SYNC_AGE_NANOS:
        critical.append(f"last synchronization {_hours(age)} ago (over 6 h)")
    elif record.initial_done and age > WARNING_SYNC_AGE_NANOS:
        warning.append(f"last synchronization {_hours(age)} ago (over 1 h)")
    if stats.total_cycles and stats.missed_cycles > MAX_MISSED_FRACTION * stats.total_cycles:
        warning.append(f"{stats.missed_cycles} of {stats.total_cycles} cycles missed (over 20%)")
    if stats.average_latency_seconds > MAX_AVERAGE_LATENCY_SECONDS:
        warning.append(f"average latency {stats.average_latency_seconds:.0f} s (over 5 min)")
    if critical:
        return ReplicationHealth.CRITICAL, tuple(critical + warning)
    if warning:
        return ReplicationHealth.WARNING, tuple(warning)
    return ReplicationHealth.NORMAL, ()


def _hours(nanos: int) -> str:
    return f"{nanos / HOUR_NANOS:.1f} h"


def missed_fraction(cycles: Sequence[CycleOutcome]) -> float:
    """The share of missed cycles, 0 when there are none."""
    return (sum(1 for c in cycles if c.missed) / len(cycles)) if cycles else 0.0
