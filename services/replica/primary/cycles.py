"""A VM's cycles as the operator sees them: their ids, the one queued by ReplicateNow, the running one's
progress, the last ones' outcomes, and watchers waiting for a change.

``ReplicateNow`` only queues a cycle (``CycleBook.request``) and returns its id at once; the scheduler
starts it (``start``) as soon as the VM has no cycle running, and ``WatchCycle`` follows it until it
ends (``watch``), so no caller waits on a fixed deadline for a transfer of unknown length.

Ids increase per VM, also across restarts of the site, without a write per cycle: the book hands them
out from a reserved block (``ID_BLOCK``) whose end ``replication.json`` records; a restarted site
starts after the recorded end, so an id a watcher holds never names another cycle.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from overland.v1 import replica_pb2
from services.replica.errors import ReplicationNotFound

ID_BLOCK = 1000
# Cycles of a VM kept for WatchCycle after they ended.
KEPT_CYCLES = 16
# While a cycle transfers, a watcher gets its progress this often.
PROGRESS_SECONDS = 0.5

TERMINAL = frozenset({replica_pb2.CYCLE_STATE_SUCCEEDED, replica_pb2.CYCLE_STATE_FAILED})


@dataclass
class Progress:
    """What a running transfer has done, read by GetReplication for ``status --watch``."""

    total_bytes: int = 0
    sent_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.sent_bytes += n

    def plan(self, total: int) -> None:
        """The transfer starts: ``total`` bytes to send, none sent yet."""
        with self.lock:
            self.total_bytes, self.sent_bytes = total, 0

    @property
    def fraction(self) -> float:
        with self.lock:
            return min(1.0, self.sent_bytes / self.total_bytes) if self.total_bytes else 0.0


@dataclass
class CycleRun:
    """One cycle: queued, running or ended. Changed only under its book's lock."""

    vm_name: str
    id: int
    requested: bool
    queue_ns: int
    state: replica_pb2.CycleState = replica_pb2.CYCLE_STATE_QUEUED
    kind: str = ""
    start_ns: int = 0
    end_ns: int = 0
    sequence: int = 0
    error_code: str = ""
    error: str = ""
    progress: Progress = field(default_factory=Progress)
    # The trace context of the ReplicateNow call that queued it: the cycle's span becomes its child.
    context: Any = None

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    def to_proto(self) -> replica_pb2.Cycle:
        with self.progress.lock:
            total, sent = self.progress.total_bytes, self.progress.sent_bytes
        kind = f"CYCLE_KIND_{self.kind.upper()}" if self.kind else "CYCLE_KIND_UNSPECIFIED"
        return replica_pb2.Cycle(
            vm_name=self.vm_name,
            id=self.id,
            state=self.state,
            kind=kind,
            total_bytes=total,
            transferred_bytes=sent,
            queue_time_unix_nanos=self.queue_ns,
            start_time_unix_nanos=self.start_ns,
            end_time_unix_nanos=self.end_ns,
            sequence=self.sequence,
            error_code=self.error_code,
            error=self.error,
            requested=self.requested,
        )


class CycleBook:
    """The cycles of one VM. Thread-safe. ``reserved`` is the end of the id block the VM's state file
    recorded; ``on_reserve`` is called (outside the lock) with a new end to record."""

    def __init__(self, vm_name: str, reserved: int = 0, on_reserve: Callable[[], None] | None = None):
        self.vm_name = vm_name
        self.reserved = reserved
        self._next = reserved + 1
        self._on_reserve = on_reserve or (lambda: None)
        self._cond = threading.Condition(threading.Lock())
        self._queued: CycleRun | None = None
        self._current: CycleRun | None = None
        self._ended: deque[CycleRun] = deque(maxlen=KEPT_CYCLES)

    def _new(self, requested: bool, context: Any = None) -> tuple[CycleRun, bool]:
        """A new cycle (lock held), and whether a new id block was reserved."""
        cycle_id = self._next
        self._next += 1
        reserve = cycle_id > self.reserved
        if reserve:
            self.reserved = cycle_id + ID_BLOCK - 1
        return CycleRun(self.vm_name, cycle_id, requested, time.time_ns(), context=context), reserve

    def request(self, context: Any = None) -> CycleRun:
        """ReplicateNow: the queued cycle (a new one unless one is queued and not started yet)."""
        with self._cond:
            if self._queued is not None:
                return self._queued
            self._queued, reserve = self._new(True, context)
            queued = self._queued
            self._cond.notify_all()
        if reserve:
            self._on_reserve()
        return queued

    @property
    def queued(self) -> CycleRun | None:
        with self._cond:
            return self._queued

    def start(self, kind: str) -> CycleRun:
        """The cycle that runs now: the queued one if there is one, else a scheduled one."""
        with self._cond:
            run, reserve = (self._queued, False) if self._queued is not None else self._new(False)
            self._queued = None
            run.state = replica_pb2.CYCLE_STATE_RUNNING
            run.kind = kind
            run.start_ns = time.time_ns()
            self._current = run
            self._cond.notify_all()
        if reserve:
            self._on_reserve()
        return run

    def changed(self) -> None:
        """Something about a running cycle changed (its kind, its plan): wake the watchers."""
        with self._cond:
            self._cond.notify_all()

    def finish(self, run: CycleRun, *, sequence: int = 0, error_code: str = "", error: str = "") -> None:
        """The cycle ended: succeeded with ``sequence``, or failed with ``error_code`` and ``error``."""
        with self._cond:
            run.state = replica_pb2.CYCLE_STATE_FAILED if error_code else replica_pb2.CYCLE_STATE_SUCCEEDED
            run.sequence = sequence
            run.error_code = error_code
            run.error = error
            run.end_ns = time.time_ns()
            if self._queued is run:
                self._queued = None
            if self._current is run:
                self._current = None
            self._ended.append(run)
            self._cond.notify_all()

    def latest(self) -> CycleRun | None:
        """The running cycle, else the last one that ended, else the queued one."""
        with self._cond:
            return self._current or (self._ended[-1] if self._ended else None) or self._queued

    def find(self, cycle_id: int) -> CycleRun:
        """Cycle ``cycle_id`` (0: ``latest``), or ``ReplicationNotFound``."""
        if cycle_id == 0:
            found = self.latest()
            if found is None:
                raise ReplicationNotFound(f"VM {self.vm_name!r} has had no cycle yet")
            return found
        with self._cond:
            for run in (self._current, self._queued, *self._ended):
                if run is not None and run.id == cycle_id:
                    return run
        raise ReplicationNotFound(
            f"VM {self.vm_name!r} has no cycle {cycle_id} (this site keeps its last {KEPT_CYCLES}; "
            "a cycle that was running when the site restarted is gone)"
        )

    def watch(self, cycle_id: int, active: Callable[[], bool]) -> Iterator[replica_pb2.Cycle]:
        """The cycle's state now, then at each change (and every ``PROGRESS_SECONDS`` while it runs),
        until it has ended or ``active`` says the watcher left."""
        run = self.find(cycle_id)
        last: replica_pb2.Cycle | None = None
        while True:
            with self._cond:
                if last is not None and not run.ended:
                    self._cond.wait(PROGRESS_SECONDS)
            now = run.to_proto()
            if now != last:
                yield now
                last = now
            if run.ended or not active():
                return
