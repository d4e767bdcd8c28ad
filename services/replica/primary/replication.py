"""One VM replicated from the primary: its request and policy, its replication record and how they
persist (``replication.json``), its tracked disks, and what its running cycle has done so far.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from overland.v1 import replica_pb2
from services.replica import states
from services.replica.disks import SiteDisk
from services.replica.errors import InvalidTransition, ReplicaStateCorrupted
from services.replica.files import write_atomic
from services.replica.primary.cycles import CycleBook, Progress
from services.replica.primary.tracking import TrackedDevice, WriteGate
from services.replica.settings import ReplicationPolicy
from services.replica.states import Event, Record, ReplicationState

STATE_FILE = "replication.json"


class Abort(threading.Event):
    """Set to stop a VM's running cycle at its next chunk; ``reason`` says why (in its record)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def stop(self, reason: str) -> None:
        self.reason = reason
        self.set()

    def resume(self) -> None:
        self.reason = ""
        self.clear()


@dataclass
class Outage:
    """The DR site has not answered since ``since_nanos``: the last error, and the probes that failed."""

    since_nanos: int
    reason: str
    probes: int = 0


@dataclass
class VmReplication:
    """One VM replicated from this site; ``directory`` holds its state file and tracking logs."""

    request: replica_pb2.EnableReplicationRequest
    policy: ReplicationPolicy
    record: Record
    disks: dict[str, TrackedDevice]
    directory: Path
    last_sequence: int = 0
    force_resync: bool = False
    next_due: float = 0.0
    running: threading.Lock = field(default_factory=threading.Lock)
    cycle_started: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # Every write to any disk of the VM passes it; a cut holds it, so all disks are cut at one instant.
    gate: WriteGate = field(default_factory=WriteGate)
    # Serializes changes of ``record`` and their persistence between RPC threads and the cycle thread.
    state_lock: threading.RLock = field(default_factory=threading.RLock)
    # Each disk as the site's disk owner holds it open (its export serves the tracked device).
    site_disks: dict[str, SiteDisk] = field(default_factory=dict)
    # Set while the scheduler has handed a cycle of the VM to the pool and it has not ended.
    submitted: threading.Event = field(default_factory=threading.Event)
    # What is wrong with the replication beyond its state (health names each, CRITICAL).
    faults: list[str] = field(default_factory=list)
    # The DR site does not answer (a cycle retries, or the scheduler probes it until it does).
    outage: Outage | None = None
    # Set to stop the running cycle between chunks (the site stops, or the replication is disabled).
    abort: Abort = field(default_factory=Abort)
    # The end of the reserved block of cycle ids (``primary/cycles.py``) ``replication.json`` recorded.
    cycle_ids_reserved: int = 0
    # Its cycles: the queued one, the running one's progress, the last ones' outcomes.
    cycles: CycleBook = field(init=False)
    progress: Progress = field(init=False)

    def __post_init__(self) -> None:
        self.cycles = CycleBook(self.name, self.cycle_ids_reserved, on_reserve=self.save)
        self.progress = Progress()

    @property
    def name(self) -> str:
        return self.request.vm.name

    def save(self) -> None:
        """Persist the record (atomically: a crash leaves the previous or this one)."""
        with self.state_lock:
            write_atomic(self.directory / STATE_FILE, encode(self))

    def event(self, event: Event, reason: str = "") -> None:
        """Apply ``event`` to the record and persist it; ``InvalidTransition`` if the state forbids it."""
        with self.state_lock:
            before = self.record
            try:
                self.record = self.record.apply(event, time.time_ns(), reason)
            except states.TransitionError as error:
                raise InvalidTransition(f"VM {self.name!r}: {error}") from None
            # A cycle starting in REPLICATING changes nothing durable: skip two fsyncs per cycle.
            if event != Event.CYCLE_STARTED or self.record.state != before.state:
                self.save()


def encode(vm: VmReplication) -> bytes:
    """The content of ``replication.json``."""
    r = vm.record
    doc = {
        "request": base64.b64encode(vm.request.SerializeToString()).decode(),
        "state": int(r.state),
        "initial_done": r.initial_done,
        "resync_required": r.resync_required or vm.force_resync,
        "paused_since_nanos": r.paused_since_nanos,
        "last_sync_nanos": r.last_sync_nanos,
        "enabled_nanos": r.enabled_nanos,
        "error": r.error,
        "last_sequence": vm.last_sequence,
        "cycle_ids_reserved": vm.cycles.reserved,
    }
    return json.dumps(doc, indent=1).encode()


def reserved_cycle_ids(data: bytes) -> int:
    """The end of the cycle id block ``replication.json`` (``data``) recorded; 0 before any."""
    try:
        return int(json.loads(data).get("cycle_ids_reserved", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


def decode(data: bytes, path: Path) -> tuple[replica_pb2.EnableReplicationRequest, Record, int]:
    """The request, the record and the last sequence saved in ``path`` (whose content is ``data``)."""
    try:
        doc = json.loads(data)
        request = replica_pb2.EnableReplicationRequest.FromString(base64.b64decode(doc["request"]))
        record = Record(
            state=ReplicationState(doc["state"]),
            initial_done=bool(doc["initial_done"]),
            resync_required=bool(doc["resync_required"]),
            paused_since_nanos=int(doc["paused_since_nanos"]),
            last_sync_nanos=int(doc["last_sync_nanos"]),
            enabled_nanos=int(doc["enabled_nanos"]),
            error=str(doc["error"]),
        )
        return request, record, int(doc["last_sequence"])
    except (ValueError, KeyError, TypeError) as error:
        raise ReplicaStateCorrupted(f"unreadable replication state {path}: {error}") from None
