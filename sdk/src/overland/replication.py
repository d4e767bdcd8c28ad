"""Replication as a client follows it: whether a cycle has ended, its failure as the SDK's error,
``wait_cycle``, which follows a cycle ``replicate_now`` queued until it ends, and ``write_export``,
which writes a recovery point a DR site exports to a file.

    with ReplicaClient() as replica:
        done = wait_cycle(replica, replica.replicate_now(vm_name="vm1"))   # raises if it failed
    with ReplicaReceiverClient(dr_endpoint) as dr:
        write_export(dr.export_recovery_point(vm_name="vm1", point_id="vm1@12"), Path("vm1-12.vhd"))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class ExportedFile:
    """What ``write_export`` wrote: the disk, the point's sequence, the file's size and the bytes of
    data in it (the rest are holes)."""

    disk: str
    sequence: int
    file_bytes: int
    data_bytes: int


def write_export(
    pieces: Iterable[replica_pb2.RecoveryPointData],
    path: Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExportedFile:
    """Write an ``export_recovery_point`` stream to ``path``, which must not exist: into ``path.part``
    (a sparse file of the announced size), synced, then renamed, so ``path`` is whole or absent.
    ``on_progress(position, file_bytes)`` follows it."""
    stream = iter(pieces)
    first = next(stream, None)
    if first is None or not first.disk:
        raise error_from_status(grpc.StatusCode.DATA_LOSS, "the export stream did not say what it holds")
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    data = 0
    try:
        os.ftruncate(fd, first.file_bytes)
        for piece in stream:
            end = piece.offset + len(piece.data)
            if end > first.file_bytes:
                raise error_from_status(
                    grpc.StatusCode.DATA_LOSS,
                    f"the export sent bytes up to {end}, past its {first.file_bytes}",
                )
            os.pwrite(fd, piece.data, piece.offset)
            data += len(piece.data)
            if on_progress is not None:
                on_progress(end, first.file_bytes)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        part.unlink(missing_ok=True)
        raise
    os.close(fd)
    part.rename(path)
    return ExportedFile(first.disk, first.sequence, first.file_bytes, data)
