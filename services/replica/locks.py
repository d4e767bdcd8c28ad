"""A write gate: many writers at once, or one exclusive holder that waits for the writers in flight.

Three things hold one exclusively for an instant: a tracked disk's cut (``primary/tracking``), a VM's
cut across all its disks (``primary/gate.py``), and the swap of the device behind a disk's export
(``disks.py``).
"""

from __future__ import annotations

import threading


class WriteGate:
    """Many writers at once, or one exclusive holder; a waiting exclusive holder stops new writers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._writers = 0
        self._exclusive = False
        self._waiting = 0

    def enter(self) -> None:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._writers += 1

    def leave(self) -> None:
        with self._cond:
            self._writers -= 1
            if not self._writers:
                self._cond.notify_all()

    def lock(self) -> None:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._writers:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True

    def unlock(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()
