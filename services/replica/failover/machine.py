"""A VM's failover state at one site, and which operations move it where — pure, no I/O.

A site is a VM's primary (it replicates the VM) or its replica (it keeps the VM's replica); which one
is the VM's state here, and failover moves it:

* primary: PRIMARY --prepare--> PREPARED (a planned failover: last changes shipped, VM locked);
  StopVmFailover cancels the prepare; the DR site's planned failover then makes this site adopt its
  disk as the replica (--adopt--> REPLICA).
* replica: REPLICA --planned failover--> PRIMARY (the VM starts on the latest point, replication is
  reversed); REPLICA --unplanned failover--> FAILED_OVER (the VM runs at a chosen point, deltas are
  refused) --cancel--> REPLICA, --complete--> FAILOVER_COMPLETE --reverse--> PRIMARY.
* a test failover runs beside REPLICA only (one at a time); stopping it changes nothing else.

``apply`` is the whole rule book: an operation the state does not allow raises ``IllegalOperation``,
whose message names the current state (the API's FAILED_PRECONDITION). ``History`` is what a site
records of every transition; ``FailoverStateValue`` values equal ``overland.v1.FailoverState``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Phase(enum.IntEnum):
    """Where a VM stands at a site (values of ``overland.v1.FailoverState``)."""

    PRIMARY = 1
    PREPARED = 2
    REPLICA = 3
    FAILED_OVER = 4
    FAILOVER_COMPLETE = 5


class Operation(enum.Enum):
    """What moves a VM's failover state; the value is how history names it."""

    START_TEST = "start test failover"
    STOP_TEST = "stop test failover"
    PREPARE = "prepare planned failover"
    CANCEL_PREPARE = "cancel planned failover"
    PLANNED_FAILOVER = "planned failover"
    UNPLANNED_FAILOVER = "unplanned failover"
    CANCEL_FAILOVER = "cancel failover"
    COMPLETE = "complete failover"
    REVERSE = "reverse replication"
    ADOPT_PLANNED = "adopt replica after planned failover"
    ADOPT_DIVERGED = "adopt replica after failover"


_DESCRIPTION = {
    Phase.PRIMARY: "the primary (replicating it)",
    Phase.PREPARED: "the primary, prepared for a planned failover",
    Phase.REPLICA: "a replica",
    Phase.FAILED_OVER: "failed over (not completed)",
    Phase.FAILOVER_COMPLETE: "failed over and completed (not reversed yet)",
}


@dataclass(frozen=True)
class FailoverState:
    """A VM's failover state at a site: its phase, and whether a test failover runs beside it."""

    phase: Phase
    test: bool = False

    def describe(self) -> str:
        words = _DESCRIPTION[self.phase]
        return f"{words}, with a test failover running" if self.test else words


class IllegalOperation(ValueError):
    """The operation is not allowed in the state; the message names the state."""

    def __init__(self, vm_name: str, state: FailoverState, operation: Operation, why: str = ""):
        reason = f": {why}" if why else ""
        super().__init__(
            f"cannot {operation.value} of VM {vm_name!r}: this site is {state.describe()}{reason}"
        )
        self.state = state
        self.operation = operation


# operation -> (phases it is allowed in, the phase after it). Test operations keep the phase.
_TABLE: dict[Operation, tuple[frozenset[Phase], Phase | None]] = {
    Operation.START_TEST: (frozenset({Phase.REPLICA}), None),
    Operation.STOP_TEST: (frozenset({Phase.REPLICA}), None),
    Operation.PREPARE: (frozenset({Phase.PRIMARY}), Phase.PREPARED),
    Operation.CANCEL_PREPARE: (frozenset({Phase.PREPARED}), Phase.PRIMARY),
    Operation.PLANNED_FAILOVER: (frozenset({Phase.REPLICA}), Phase.PRIMARY),
    Operation.UNPLANNED_FAILOVER: (frozenset({Phase.REPLICA}), Phase.FAILED_OVER),
    Operation.CANCEL_FAILOVER: (frozenset({Phase.FAILED_OVER}), Phase.REPLICA),
    Operation.COMPLETE: (frozenset({Phase.FAILED_OVER}), Phase.FAILOVER_COMPLETE),
    Operation.REVERSE: (frozenset({Phase.FAILOVER_COMPLETE}), Phase.PRIMARY),
    Operation.ADOPT_PLANNED: (frozenset({Phase.PREPARED}), Phase.REPLICA),
    Operation.ADOPT_DIVERGED: (frozenset({Phase.PRIMARY, Phase.PREPARED}), Phase.REPLICA),
}


def apply(vm_name: str, state: FailoverState, operation: Operation) -> FailoverState:
    """The state after ``operation``, or ``IllegalOperation`` naming ``state``."""
    allowed, after = _TABLE[operation]
    if state.phase not in allowed:
        raise IllegalOperation(vm_name, state, operation)
    if operation is Operation.START_TEST:
        if state.test:
            raise IllegalOperation(vm_name, state, operation, "one test failover at a time")
        return replace(state, test=True)
    if operation is Operation.STOP_TEST:
        if not state.test:
            raise IllegalOperation(vm_name, state, operation, "no test failover runs")
        return replace(state, test=False)
    if state.test:
        raise IllegalOperation(vm_name, state, operation, "stop the test failover first")
    assert after is not None
    return FailoverState(after)


def allowed(state: FailoverState) -> frozenset[Operation]:
    """Every operation ``apply`` accepts in ``state``."""
    found = set()
    for operation in Operation:
        try:
            apply("", state, operation)
        except IllegalOperation:
            continue
        found.add(operation)
    return frozenset(found)


def stop_operation(state: FailoverState) -> Operation:
    """What StopVmFailover does in ``state``: end the test, cancel the failover, or cancel a prepare
    (``apply`` then judges it; a state with none of them gets the test's refusal)."""
    if state.phase is Phase.FAILED_OVER:
        return Operation.CANCEL_FAILOVER
    if state.phase is Phase.PREPARED:
        return Operation.CANCEL_PREPARE
    return Operation.STOP_TEST


def start_operation(state: FailoverState, *, as_test: bool, prepare: bool, planned_ready: bool) -> Operation:
    """What StartVmFailover does: a test, a prepare, or (at a replica) a planned failover when the
    primary's last delta was the prepared one, else an unplanned one."""
    if as_test:
        return Operation.START_TEST
    if prepare:
        return Operation.PREPARE
    return Operation.PLANNED_FAILOVER if planned_ready else Operation.UNPLANNED_FAILOVER


@dataclass(frozen=True)
class Transition:
    """One entry of a VM's failover history at a site."""

    time_nanos: int
    who: str
    operation: Operation
    before: FailoverState
    after: FailoverState
    recovery_point: int = 0
    detail: str = ""


@dataclass(frozen=True)
class History:
    """A VM's failover state at a site and every transition that led there, oldest first."""

    vm_name: str
    state: FailoverState
    transitions: tuple[Transition, ...] = ()

    def record(
        self,
        operation: Operation,
        *,
        time_nanos: int,
        who: str,
        recovery_point: int = 0,
        detail: str = "",
    ) -> History:
        """The history after ``operation`` succeeded (``IllegalOperation`` if the state forbids it)."""
        after = apply(self.vm_name, self.state, operation)
        entry = Transition(time_nanos, who, operation, self.state, after, recovery_point, detail)
        return replace(self, state=after, transitions=(*self.transitions, entry))
