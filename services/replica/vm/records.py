"""What a site keeps of each VM, in the VM's folder under the state directory: ``vm.json`` (its
definition and state: ``VmRecord``) and, while its qemu runs, ``qemu.pid`` (``RunRecord``: which
process it is, so a restarted site adopts it). Both are replaced whole with the one atomic-write
helper, so a crash leaves the old content or the new, never a mix.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overland.v1 import replica_pb2
from services.replica.errors import ReplicaStateCorrupted
from services.replica.files import write_atomic
from services.replica.vm.definition import NetworkSettings
from services.replica.vm.process import ProcessIdentity

RECORD_FILE = "vm.json"
RUN_FILE = "qemu.pid"


@dataclass
class VmRecord:
    """A VM defined at this site: its id, definition and what is durable about its state."""

    id: str
    config: replica_pb2.VirtualMachine
    created_nanos: int
    network: NetworkSettings = NetworkSettings.PRIMARY
    # A replica of a VM whose primary is another site (set by a failover or a reverse).
    replica: bool = False
    # Why it may not start, if it may not.
    locked_reason: str = ""
    last_stop: str = ""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "config": base64.b64encode(self.config.SerializeToString()).decode(),
                "created_nanos": self.created_nanos,
                "network": self.network.name.lower(),
                "replica": self.replica,
                "locked_reason": self.locked_reason,
                "last_stop": self.last_stop,
            },
            indent=1,
        ).encode()

    @classmethod
    def decode(cls, data: bytes, path: Path) -> VmRecord:
        doc = _document(data, path)
        try:
            return cls(
                id=str(doc["id"]),
                config=replica_pb2.VirtualMachine.FromString(base64.b64decode(doc["config"])),
                created_nanos=int(doc["created_nanos"]),
                network=NetworkSettings[str(doc["network"]).upper()],
                replica=bool(doc["replica"]),
                locked_reason=str(doc["locked_reason"]),
                last_stop=str(doc["last_stop"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ReplicaStateCorrupted(f"unreadable VM record {path}: {error!r}") from None

    def save(self, directory: Path) -> None:
        write_atomic(directory / RECORD_FILE, self.encode())


@dataclass(frozen=True)
class RunRecord:
    """One run of a VM's qemu: the process, when it started, on which accelerator, with which kernel
    command line."""

    identity: ProcessIdentity
    started_nanos: int
    accel: str
    append: str

    def encode(self) -> bytes:
        return json.dumps(
            {
                "pid": self.identity.pid,
                "start_ticks": self.identity.start_ticks,
                "started_nanos": self.started_nanos,
                "accel": self.accel,
                "append": self.append,
            },
            indent=1,
        ).encode()

    @classmethod
    def decode(cls, data: bytes, path: Path) -> RunRecord:
        doc = _document(data, path)
        try:
            return cls(
                ProcessIdentity(int(doc["pid"]), int(doc["start_ticks"])),
                int(doc["started_nanos"]),
                str(doc["accel"]),
                str(doc["append"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ReplicaStateCorrupted(f"unreadable qemu run record {path}: {error!r}") from None

    def save(self, directory: Path) -> None:
        write_atomic(directory / RUN_FILE, self.encode())


def _document(data: bytes, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as error:
        raise ReplicaStateCorrupted(f"unreadable {path}: {error}") from None
    if not isinstance(doc, dict):
        raise ReplicaStateCorrupted(f"unreadable {path}: not a JSON object")
    return doc
