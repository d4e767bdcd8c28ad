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
from services.replica.primary.tracking import TrackedDevice, WriteGate
from services.replica.settings import ReplicationPolicy
from services.replica.states import Event, Record, ReplicationState

STATE_FILE = "replication.json"


@dataclass
class Progress:
    """What a running transfer has done, read by GetReplication for ``status --watch``."""

    total_bytes: int = 0
    sent_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.sent_bytes += n

    @property
    def fraction(self) -> float:
        with self.lock:
            return min(1.0, self.sent_bytes / self.total_bytes) if self.total_bytes else 0.0


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
    progress: Progress = field(default_factory=Progress)
    cycle_started: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # Every write to any disk of the VM passes it; a cut holds it, so all disks are cut at one instant.
    gate: WriteGate = field(default_factory=WriteGate)
    # Serializes changes of ``record`` and their persistence between RPC threads and the cycle thread.
    state_lock: threading.RLock = field(default_factory=threading.RLock)
    # Each disk as the site's disk owner holds it open (its export serves the tracked device).
    site_disks: dict[str, SiteDisk] = field(default_factory=dict)

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
    }
    return json.dumps(doc, indent=1).encode()


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
