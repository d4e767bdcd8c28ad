"""What a site keeps of each VM's failover: ``STATE/failover/<vm>.json`` (``FailoverRecord``): its
state and history, the other site, the test or failover VM's recovery point, and the lookup records
it moved (so a cancel moves them back). Replaced whole with the one atomic-write helper."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.replica.errors import ReplicaStateCorrupted
from services.replica.failover.machine import FailoverState, History, Operation, Phase, Transition
from services.replica.failover.network import MovedRecord
from services.replica.files import write_atomic

SUFFIX = ".json"


@dataclass
class FailoverRecord:
    """One VM's failover at this site."""

    history: History
    # The primary this site keeps the replica of (its allow-list name), in the replica phases.
    primary: str = ""
    # The other site's ReplicaService.
    peer_endpoint: str = ""
    # The test failover VM and its recovery point, while a test runs.
    test_vm: str = ""
    test_point: int = 0
    # The recovery point an unplanned failover runs at.
    point: int = 0
    # The lookup records this site moved to its host (a cancel moves them back).
    moved: list[MovedRecord] = field(default_factory=list)
    final_cycle_bytes: int = 0

    @property
    def vm_name(self) -> str:
        return self.history.vm_name

    @property
    def state(self) -> FailoverState:
        return self.history.state

    def encode(self) -> bytes:
        return json.dumps(
            {
                "vm": self.vm_name,
                "state": _state(self.state),
                "transitions": [_transition(t) for t in self.history.transitions],
                "primary": self.primary,
                "peer_endpoint": self.peer_endpoint,
                "test_vm": self.test_vm,
                "test_point": self.test_point,
                "point": self.point,
                "moved": [m.encode() for m in self.moved],
                "final_cycle_bytes": self.final_cycle_bytes,
            },
            indent=1,
        ).encode()

    @classmethod
    def decode(cls, data: bytes, path: Path) -> FailoverRecord:
        try:
            doc = json.loads(data)
            history = History(
                str(doc["vm"]),
                _from_state(doc["state"]),
                tuple(_from_transition(t) for t in doc["transitions"]),
            )
            return cls(
                history,
                primary=str(doc["primary"]),
                peer_endpoint=str(doc["peer_endpoint"]),
                test_vm=str(doc["test_vm"]),
                test_point=int(doc["test_point"]),
                point=int(doc["point"]),
                moved=[MovedRecord.decode(m) for m in doc["moved"]],
                final_cycle_bytes=int(doc["final_cycle_bytes"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ReplicaStateCorrupted(f"unreadable failover record {path}: {error!r}") from None

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / f"{self.vm_name}{SUFFIX}", self.encode())


def load_all(directory: Path) -> dict[str, FailoverRecord]:
    records = {}
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        record = FailoverRecord.decode(path.read_bytes(), path)
        records[record.vm_name] = record
    return records


def _state(state: FailoverState) -> dict[str, Any]:
    return {"phase": state.phase.name.lower(), "test": state.test}


def _from_state(doc: dict[str, Any]) -> FailoverState:
    return FailoverState(Phase[str(doc["phase"]).upper()], bool(doc["test"]))


def _transition(t: Transition) -> dict[str, Any]:
    return {
        "time": t.time_nanos,
        "who": t.who,
        "operation": t.operation.name.lower(),
        "before": _state(t.before),
        "after": _state(t.after),
        "recovery_point": t.recovery_point,
        "detail": t.detail,
    }


def _from_transition(doc: dict[str, Any]) -> Transition:
    return Transition(
        int(doc["time"]),
        str(doc["who"]),
        Operation[str(doc["operation"]).upper()],
        _from_state(doc["before"]),
        _from_state(doc["after"]),
        int(doc["recovery_point"]),
        str(doc["detail"]),
    )
