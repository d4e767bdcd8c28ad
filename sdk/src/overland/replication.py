"""Replication cycles as a client follows them: whether a cycle has ended, its failure as the SDK's
error, and ``wait_cycle``, which follows a cycle ``replicate_now`` queued until it ends.

    with ReplicaClient() as replica:
        done = wait_cycle(replica, replica.replicate_now(vm_name="vm1"))   # raises if it failed
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from overland.errors import OverlandError, error_from_status

if TYPE_CHECKING:
    from overland.client import ReplicaClient
    from overland.v1 import replica_pb2

# CycleState values (the generated module is not imported here: ``import overland`` stays cheap).
_SUCCEEDED, _FAILED = 3, 4


def cycle_ended(cycle: replica_pb2.Cycle) -> bool:
    return cycle.state in (_SUCCEEDED, _FAILED)


def cycle_error(cycle: replica_pb2.Cycle) -> OverlandError | None:
    """A failed cycle's error, of the class of its status code; None unless it failed."""
    if cycle.state != _FAILED:
        return None
    code = getattr(grpc.StatusCode, cycle.error_code, grpc.StatusCode.UNKNOWN)
    return error_from_status(code, f"cycle {cycle.id} of VM {cycle.vm_name!r} failed: {cycle.error}")


def wait_cycle(
    client: ReplicaClient,
    cycle: replica_pb2.Cycle,
    on_progress: Callable[[replica_pb2.Cycle], None] | None = None,
) -> replica_pb2.Cycle:
    """Follow ``cycle`` (as ``replicate_now`` returned it) until it ends; ``on_progress`` sees every
    update. The ended cycle, or its error (``cycle_error``) raised."""
    last = cycle
    for update in client.watch_cycle(vm_name=cycle.vm_name, id=cycle.id):
        last = update
        if on_progress is not None:
            on_progress(update)
    error = cycle_error(last)
    if error is not None:
        raise error
    if not cycle_ended(last):
        raise error_from_status(grpc.StatusCode.UNAVAILABLE, f"the watch of cycle {cycle.id} ended early")
    return last
