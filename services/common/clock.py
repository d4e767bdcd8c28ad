"""The one clock shape the services read time through, so that tests can drive it.

``Clock`` has the two clocks a service needs: ``monotonic`` for intervals and deadlines, ``time_ns``
for wall-clock times that are stored or compared across hosts (write times, recovery points).
``create_server(config, clock=...)`` of every service takes one; ``SYSTEM_CLOCK`` is the real one and
``ManualClock`` one that moves only when told to.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back."""
        ...

    def time_ns(self) -> int:
        """Nanoseconds since the Unix epoch."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return time.time_ns()


SYSTEM_CLOCK: Clock = SystemClock()

# Where a manual clock's wall time starts: 2024-01-01T00:00:00Z.
_EPOCH_2024_NS = 1_704_067_200 * 10**9


class ManualClock:
    """A clock that moves only when told to (lease expiry, rate limits, recovery point pruning).
    Calling it reads ``monotonic``, so it also serves where a plain ``() -> float`` is expected."""

    def __init__(self, start: float = 1000.0, wall_start_ns: int = _EPOCH_2024_NS):
        self._now = start
        self._wall_offset_ns = wall_start_ns - int(start * 1e9)
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time_ns(self) -> int:
        with self._lock:
            return self._wall_offset_ns + int(self._now * 1e9)

    def __call__(self) -> float:
        return self.monotonic()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
