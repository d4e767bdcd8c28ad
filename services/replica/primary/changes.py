"""Set-VMReplication: which settings of a running replication may change, and what moving it to another
replica server means — pure (the manager asks the new site and applies the answer).

Frequency, recovery points, compression and the bandwidth limit take effect from the next cycle (the
number of recovery points travels in each delta's header, so the DR site applies it at its next
commit); a cycle that is running finishes as it started. None needs a resync.

The replica server may change without a resync only to a site that holds this VM's replica at this
primary's last sequence (a copy of the DR site moved elsewhere, or a second DR site kept in step):
deltas go on there. Any other site needs ``resync``: one that holds another replica of the VM is
resynchronized by hash compare, one that holds none gets a new initial replication. Without it the
change is refused, and nothing changes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from overland.v1 import replica_pb2
from services.common.errors import FieldViolation
from services.replica.errors import InvalidReplicationSettings, InvalidTransition

# The settings Set-VMReplication may change (the initial method and its export path may not).
CHANGEABLE = (
    "frequency_seconds",
    "additional_recovery_points",
    "compression_mode",
    "bandwidth_limit_bytes_per_second",
    "replica_server",
)


def changed_settings(
    current: replica_pb2.ReplicationSettings, new: replica_pb2.ReplicationSettings, fields: Sequence[str]
) -> replica_pb2.ReplicationSettings:
    """``current`` with the ``fields`` of ``new``; ``InvalidReplicationSettings`` for no field, or one
    that is unknown or cannot change. The values are the caller's to validate."""
    violations = []
    if not fields:
        violations.append(FieldViolation("fields", f"name the settings to change: {', '.join(CHANGEABLE)}"))
    for index, name in enumerate(fields):
        if name not in CHANGEABLE:
            why = (
                "cannot change"
                if name in replica_pb2.ReplicationSettings.DESCRIPTOR.fields_by_name
                else "unknown"
            )
            violations.append(
                FieldViolation(f"fields[{index}]", f"{name!r}: {why} (one of {', '.join(CHANGEABLE)})")
            )
    if violations:
        raise InvalidReplicationSettings(
            "; ".join(f"{v.field}: {v.description}" for v in violations), violations
        )
    result = replica_pb2.ReplicationSettings()
    result.CopyFrom(current)
    for name in fields:
        setattr(result, name, getattr(new, name))
    return result


class Move(enum.Enum):
    """What follows a move to another replica server."""

    DELTAS = "deltas go on"
    RESYNC = "a resync by hash compare"
    INITIAL = "a new initial replication"


def plan_move(vm: str, endpoint: str, *, ours: int, theirs: int, initial_done: bool, resync: bool) -> Move:
    """A move of VM ``vm``'s replication to ``endpoint``, which holds its replica at sequence ``theirs``
    (0: none), this primary being at ``ours``: what follows, or ``InvalidTransition`` saying why not."""
    if theirs == ours:
        return Move.DELTAS
    if not resync:
        held = f"holds VM {vm!r} at sequence {theirs}" if theirs else f"holds no replica of VM {vm!r}"
        raise InvalidTransition(
            f"{endpoint} {held}, and this primary is at sequence {ours}: only a site at the same sequence "
            "takes over without a resync (set --resync to resynchronize with it)"
        )
    return Move.RESYNC if theirs and initial_done else Move.INITIAL
