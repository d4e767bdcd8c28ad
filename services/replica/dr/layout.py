"""One VM replica's files at the DR site: where each lives, the state file, and the rules their writers
share (a full disk is ``ReplicaStorageFull``; devices are closed, and so flushed, all or raise).

Under ``<storage location>/<vm>/``:

* ``state.json`` — the single source of truth (``VmState``): the committed sequence, disk sizes, the
  VM config and the recovery points with their undo files. Replaced atomically (``files.write_atomic``).
* ``disks/<disk>.vhd`` — the replica disks (fixed VHDs), always at the latest committed point.
* ``staging/`` — the delta being received (``staging``): ``header.bin`` and ``chunks.log``
  (see ``extent_log``), or for a full transfer the new disks themselves plus a ``progress`` counter.
* ``journal/`` — ``staging/`` renamed once the whole delta is durable. The rename is the commit
  (``journal``): after it the delta is applied (redo), and a restart after a ``kill -9`` re-applies it;
  before it the replica disks were never touched, so the last committed point is intact.
* ``points/`` — undo layers for the older recovery points (``points``).
* ``point-disks/<tag>/`` — differencing disks over the replica at a recovery point, a failover VM's
  disks (``point_disks``).
* ``journal-done-*`` — an applied journal being deleted in the background (removed at start).
* ``exports/`` — recovery points being exported (``export``), each in its own folder (removed at start).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.replica.errors import ReplicaStateCorrupted, ReplicaStorageFull
from services.replica.files import write_atomic
from services.replica.vhd.device import BlockDevice
from services.replica.vhd.image import open_disk

log = logging.getLogger(__name__)

# A committed journal is renamed to this prefix and deleted in the background.
TRASH_PREFIX = "journal-done-"


@dataclass
class Point:
    """A recovery point: its delta's sequence, its cut time, and the undo layer that leads to the
    point before it ("" when there is none)."""

    sequence: int
    time_nanos: int
    undo: str = ""
    hourly: bool = False


@dataclass
class VmState:
    """The content of ``state.json``."""

    committed: int = 0
    disk_sizes: dict[str, int] = field(default_factory=dict)
    vm: bytes = b""
    additional_points: int = 0
    points: list[Point] = field(default_factory=list)
    # What the last committed delta's header said of its primary: where its ReplicaService is, its
    # replication settings (serialized ``ReplicationSettings``), and whether it was the last delta
    # before a planned failover (``DeltaHeader.planned_failover``).
    primary_endpoint: str = ""
    settings: bytes = b""
    planned: bool = False
    # Why deltas are refused (the VM failed over here); empty while they are accepted.
    refusal: str = ""
    # The registered point disks (``point_disks.PointDisks.encode``).
    point_disks: list[dict[str, object]] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "committed": self.committed,
                "disk_sizes": self.disk_sizes,
                "vm": base64.b64encode(self.vm).decode(),
                "additional_points": self.additional_points,
                "points": [p.__dict__ for p in self.points],
                "primary_endpoint": self.primary_endpoint,
                "settings": base64.b64encode(self.settings).decode(),
                "planned": self.planned,
                "refusal": self.refusal,
                "point_disks": self.point_disks,
            },
            indent=1,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> VmState:
        try:
            doc = json.loads(data)
            return cls(
                committed=int(doc["committed"]),
                disk_sizes={str(k): int(v) for k, v in doc["disk_sizes"].items()},
                vm=base64.b64decode(doc["vm"]),
                additional_points=int(doc["additional_points"]),
                points=[Point(**p) for p in doc["points"]],
                # Absent from a state written before failover existed.
                primary_endpoint=str(doc.get("primary_endpoint", "")),
                settings=base64.b64decode(doc.get("settings", "")),
                planned=bool(doc.get("planned", False)),
                refusal=str(doc.get("refusal", "")),
                point_disks=list(doc.get("point_disks", [])),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ReplicaStateCorrupted(f"replica state file is unreadable: {error}") from None


class Layout:
    """The paths of one VM's replica, and its state file."""

    def __init__(self, root: Path):
        self.root = root
        self.state_file = root / "state.json"
        self.staging = root / "staging"
        self.journal = root / "journal"
        self.disks = root / "disks"
        self.points = root / "points"
        self.exports = root / "exports"

    @property
    def known(self) -> bool:
        """Whether this site holds a replica of the VM (a state was ever saved)."""
        return self.state_file.exists()

    def load(self) -> VmState:
        return VmState.decode(self.state_file.read_bytes()) if self.known else VmState()

    def save(self, state: VmState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with storage_errors("saving replica state"):
            write_atomic(self.state_file, state.encode())

    def replica(self, disk: str) -> Path:
        return self.disks / f"{disk}.vhd"

    def open_replica(self, disk: str) -> BlockDevice:
        return open_disk(self.replica(disk), writable=True)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """ENOSPC/EDQUOT become ``ReplicaStorageFull``, with what was being written."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ReplicaStorageFull(f"DR site storage is full while {what}: {error.strerror}") from None
        raise


def close_all(devices: Iterable[BlockDevice]) -> None:
    """Close (and so flush) every device, raising the first error after trying them all."""
    errors: list[OSError] = []
    for device in devices:
        try:
            device.close()
        except OSError as error:
            errors.append(error)
    if errors:
        raise errors[0]


def remove_quietly(path: Path) -> None:
    """Best effort: a leftover only takes space until the next start removes it."""
    try:
        shutil.rmtree(path)
    except OSError as error:
        log.warning("could not remove a finished journal", extra={"path": str(path), "error": str(error)})
