"""When to retry a call and how long to wait: exponential backoff with jitter inside one overall deadline.

Pure logic with an injected clock and random source, so the sync and asyncio transports share it and
tests can drive it without sleeping. Only idempotent calls are retried, and only on UNAVAILABLE: a
create that timed out may have been applied, so repeating it is the caller's decision. A stream that
the server ended with the place to resume from (a watch that fell behind) resumes at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from overland.errors import ConfigurationError, DeadlineExceededError, OverlandError, UnavailableError


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff for idempotent calls.

    The wait before retry ``n`` (1-based) is ``min(max_backoff, initial_backoff * multiplier**(n-1))``
    scaled by a random factor in ``[1 - jitter, 1]``, so that many clients that lost the same server do
    not come back in step.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def validate(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("retry max_attempts must be at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ConfigurationError("retry backoff must satisfy 0 < initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ConfigurationError("retry multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("retry jitter must be within 0..1")

    def backoff(self, retry: int, unit_random: float) -> float:
        """The wait before retry number ``retry`` (1-based), given a random number in [0, 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return ceiling * (1 - self.jitter * unit_random)


NO_RETRY = RetryPolicy(max_attempts=1)


class RetryPlan:
    """The attempts of one call: the time left before its deadline and whether a failure is retried."""

    def __init__(
        self,
        policy: RetryPolicy,
        timeout: float | None,
        *,
        idempotent: bool,
        clock: Callable[[], float] = time.monotonic,
        unit_random: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy if idempotent else NO_RETRY
        self._clock = clock
        self._random = unit_random
        self._deadline = None if timeout is None else clock() + timeout
        self._failures = 0
        self._retried: OverlandError | None = None

    def remaining(self) -> float | None:
        """Seconds left for the next attempt (never negative), or None without a deadline."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    def succeeded(self) -> None:
        """A stream delivered a message: a later break starts a fresh series of retries."""
        self._failures = 0

    def retry_delay(self, error: OverlandError, *, resumable: bool = False) -> float | None:
        """How long to wait before the next attempt, or None when ``error`` must be raised.

        ``resumable``: the server said where to resume (see ``RpcSpec.resume_after_error``); that is
        done without a wait, but counts as an attempt, so a stream that keeps failing so before it
        delivers anything still ends."""
        self._failures += 1
        if self._failures >= self._policy.max_attempts:
            return None
        if resumable:
            return 0.0
        if not isinstance(error, UnavailableError):
            return None
        delay = self._policy.backoff(self._failures, self._random())
        left = self.remaining()
        if left is not None and delay >= left:
            return None
        self._retried = error
        return delay

    def final_error(self, error: OverlandError) -> OverlandError:
        """What to raise when ``error`` ends the call.

        A retried outage that runs into the deadline is reported as the outage (UNAVAILABLE): "the
        deadline passed" would hide why.
        """
        if isinstance(error, DeadlineExceededError) and self._retried is not None:
            return UnavailableError(
                f"{self._retried.message} (still so after {self._failures} attempts, at the deadline)",
                self._retried.field_violations,
            )
        return error
