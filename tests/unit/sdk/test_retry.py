"""Properties of the backoff schedule and of the retry decision (pure, with a fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland import ConfigurationError, RetryPolicy
from overland.errors import (
    AbortedError,
    DeadlineExceededError,
    InternalError,
    NotFoundError,
    UnavailableError,
)
from overland.retry import RetryPlan

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 10),
    initial_backoff=st.floats(0.001, 1.0),
    max_backoff=st.floats(1.0, 30.0),
    multiplier=st.floats(1.0, 4.0),
    jitter=st.floats(0.0, 1.0),
)
unit = st.floats(0.0, 1.0, exclude_max=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(policies, st.integers(1, 40), unit)
def test_backoff_stays_within_jittered_exponential_bounds(policy: RetryPolicy, retry: int, r: float) -> None:
    ceiling = min(policy.max_backoff, policy.initial_backoff * policy.multiplier ** (retry - 1))
    delay = policy.backoff(retry, r)
    assert ceiling * (1 - policy.jitter) - 1e-9 <= delay <= ceiling + 1e-9
    assert delay <= policy.max_backoff + 1e-9


@given(policies, st.integers(1, 30))
def test_backoff_ceiling_never_shrinks(policy: RetryPolicy, retry: int) -> None:
    assert policy.backoff(retry, 0.0) <= policy.backoff(retry + 1, 0.0) + 1e-9


@given(policies)
def test_unavailable_is_retried_exactly_max_attempts_minus_one_times(policy: RetryPolicy) -> None:
    plan = RetryPlan(policy, None, idempotent=True, unit_random=lambda: 0.5)
    delays = []
    while (delay := plan.retry_delay(UnavailableError("down"))) is not None:
        delays.append(delay)
        assert len(delays) < 100
    assert len(delays) == policy.max_attempts - 1


@given(st.sampled_from([AbortedError, InternalError, NotFoundError]))
def test_other_errors_are_never_retried(error_class: type[Exception]) -> None:
    plan = RetryPlan(RetryPolicy(), None, idempotent=True)
    assert plan.retry_delay(error_class("x")) is None  # type: ignore[arg-type]


def test_non_idempotent_calls_are_never_retried() -> None:
    plan = RetryPlan(RetryPolicy(max_attempts=10), None, idempotent=False)
    assert plan.retry_delay(UnavailableError("down")) is None


@given(st.floats(0.01, 5.0), unit)
def test_no_retry_that_would_outlive_the_deadline(timeout: float, r: float) -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=1.0)
    plan = RetryPlan(policy, timeout, idempotent=True, clock=clock, unit_random=lambda: r)
    while (delay := plan.retry_delay(UnavailableError("down"))) is not None:
        remaining = plan.remaining()
        assert remaining is not None
        assert delay < remaining
        clock.now += delay
    assert clock.now <= 100.0 + timeout


def test_remaining_shrinks_with_the_clock_and_never_goes_negative() -> None:
    clock = FakeClock()
    plan = RetryPlan(RetryPolicy(), 2.0, idempotent=True, clock=clock)
    assert plan.remaining() == 2.0
    clock.now += 1.5
    assert plan.remaining() == pytest.approx(0.5)
    clock.now += 10
    assert plan.remaining() == 0.0


def test_an_outage_that_reaches_the_deadline_is_reported_as_unavailable() -> None:
    clock = FakeClock()
    plan = RetryPlan(RetryPolicy(), 1.0, idempotent=True, clock=clock, unit_random=lambda: 0.0)
    assert plan.retry_delay(UnavailableError("etcd is down")) is not None
    deadline = DeadlineExceededError("Deadline Exceeded")
    assert plan.retry_delay(deadline) is None
    final = plan.final_error(deadline)
    assert isinstance(final, UnavailableError)
    assert "etcd is down" in final.message
    fresh = RetryPlan(RetryPolicy(), 1.0, idempotent=True)
    assert fresh.final_error(deadline) is deadline


def test_success_restarts_the_series() -> None:
    plan = RetryPlan(RetryPolicy(max_attempts=2), None, idempotent=True)
    assert plan.retry_delay(UnavailableError("down")) is not None
    plan.succeeded()
    assert plan.retry_delay(UnavailableError("down")) is not None
    assert plan.retry_delay(UnavailableError("down")) is None


@pytest.mark.parametrize(
    "bad",
    [
        RetryPolicy(max_attempts=0),
        RetryPolicy(initial_backoff=0),
        RetryPolicy(initial_backoff=3, max_backoff=2),
        RetryPolicy(multiplier=0.5),
        RetryPolicy(jitter=1.5),
    ],
)
def test_invalid_policies_are_rejected(bad: RetryPolicy) -> None:
    with pytest.raises(ConfigurationError):
        bad.validate()


@given(policies)
def test_a_resumable_error_is_retried_at_once_whatever_its_code(policy: RetryPolicy) -> None:
    plan = RetryPlan(policy, None, idempotent=True, unit_random=lambda: 0.5)
    delays = []
    while (delay := plan.retry_delay(AbortedError("ended, resume"), resumable=True)) is not None:
        delays.append(delay)
        assert len(delays) < 100
    # At once, and counted: one that keeps failing before it delivers anything still ends.
    assert delays == [0.0] * (policy.max_attempts - 1)
    fresh = RetryPlan(policy, None, idempotent=True)
    assert fresh.retry_delay(AbortedError("ended")) is None
