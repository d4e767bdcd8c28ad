"""The failover state machine over any sequence of operations: no illegal state is reachable, every
refusal names the current state and changes nothing, and the history records every transition."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.replica.failover.machine import (
    FailoverState,
    History,
    IllegalOperation,
    Operation,
    Phase,
    allowed,
    apply,
    start_operation,
    stop_operation,
)

STATES = [FailoverState(phase, test) for phase in Phase for test in (False, True)]


def valid(state: FailoverState) -> bool:
    """A test failover runs only beside a replica (it needs a replica and its recovery points)."""
    return not state.test or state.phase is Phase.REPLICA


@given(
    st.sampled_from([FailoverState(Phase.PRIMARY), FailoverState(Phase.REPLICA)]),
    st.lists(st.sampled_from(Operation), max_size=40),
)
@settings(max_examples=500)
def test_any_sequence_keeps_the_state_valid_and_the_history_complete(
    start: FailoverState, operations: list[Operation]
) -> None:
    history = History("vm1", start)
    for n, operation in enumerate(operations):
        before = history
        if operation not in allowed(history.state):
            with pytest.raises(IllegalOperation, match=re.escape(before.state.describe())) as refused:
                history.record(operation, time_nanos=n, who="tester", recovery_point=n)
            assert refused.value.state == before.state
            continue
        history = history.record(operation, time_nanos=n, who="tester", recovery_point=n)
        assert valid(history.state), history.state
        assert len(history.transitions) == len(before.transitions) + 1
        entry = history.transitions[-1]
        assert (entry.before, entry.after, entry.operation, entry.recovery_point) == (
            before.state,
            history.state,
            operation,
            n,
        )
    # The entries chain: each starts where the previous ended.
    states = [start] + [t.after for t in history.transitions]
    assert [t.before for t in history.transitions] == states[:-1]


@pytest.mark.parametrize("state", [s for s in STATES if valid(s)])
def test_allowed_matches_apply(state: FailoverState) -> None:
    for operation in Operation:
        if operation in allowed(state):
            assert valid(apply("vm1", state, operation))
        else:
            with pytest.raises(IllegalOperation, match=re.escape(state.describe())):
                apply("vm1", state, operation)


def test_the_illegal_transitions_of_the_issue() -> None:
    failed_over = FailoverState(Phase.FAILED_OVER)
    testing = FailoverState(Phase.REPLICA, test=True)
    cases = [
        # Failing over twice.
        (failed_over, Operation.UNPLANNED_FAILOVER, "failed over"),
        # Reversing during a test.
        (testing, Operation.REVERSE, "with a test failover running"),
        # A second test.
        (testing, Operation.START_TEST, "one test failover at a time"),
        # Failing over while a test runs, and preparing at a replica.
        (testing, Operation.UNPLANNED_FAILOVER, "stop the test failover first"),
        (FailoverState(Phase.REPLICA), Operation.PREPARE, "a replica"),
        (FailoverState(Phase.PRIMARY), Operation.COMPLETE, "the primary"),
    ]
    for state, operation, words in cases:
        with pytest.raises(IllegalOperation, match=words):
            apply("vm1", state, operation)


def test_what_start_and_stop_mean() -> None:
    replica = FailoverState(Phase.REPLICA)
    assert start_operation(replica, as_test=True, prepare=False, planned_ready=True) is Operation.START_TEST
    assert (
        start_operation(replica, as_test=False, prepare=False, planned_ready=True)
        is Operation.PLANNED_FAILOVER
    )
    assert (
        start_operation(replica, as_test=False, prepare=False, planned_ready=False)
        is Operation.UNPLANNED_FAILOVER
    )
    assert start_operation(replica, as_test=False, prepare=True, planned_ready=False) is Operation.PREPARE
    assert stop_operation(FailoverState(Phase.FAILED_OVER)) is Operation.CANCEL_FAILOVER
    assert stop_operation(FailoverState(Phase.PREPARED)) is Operation.CANCEL_PREPARE
    assert stop_operation(FailoverState(Phase.REPLICA, test=True)) is Operation.STOP_TEST
    with pytest.raises(IllegalOperation, match="no test failover runs"):
        apply("vm1", FailoverState(Phase.REPLICA), stop_operation(FailoverState(Phase.REPLICA)))
