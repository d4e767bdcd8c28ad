"""One replication cycle at the primary: ``run`` decides its kind and goes through the phases, a function
each: cut, plan, stream (with resume), commit.

``cut`` takes a crash-consistent snapshot of every disk of the VM; ``plan`` turns it into the
deterministic list of chunk extents (so a resume skips exactly the chunks the DR site has);
``messages`` is the stream, which the ``Sender`` sends over ``SendDelta``, retrying with
``resume_from`` after a corrupted chunk or a cut connection; ``commit`` records the sequence, the
statistics and the state once the DR site acked, and the snapshots are released as shipped.
The manager decides when a VM's cycle runs; this module is what it runs.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from overland.v1 import replica_pb2
from services.common.errors import ServiceError
from services.replica import states
from services.replica.codec import media
from services.replica.codec.chunks import Checksum, ChunkCodec, block_digests, checksum_for
from services.replica.codec.compression import Compressor
from services.replica.codec.wire import encode_message
from services.replica.errors import CycleAborted, ReplicaLost, ReplicaStorageFull
from services.replica.primary.chunking import DEFAULT_CHUNK_BYTES, TokenBucket, batches, split_extent
from services.replica.primary.replication import Progress, VmReplication
from services.replica.primary.sender import Sender
from services.replica.primary.tracking import DEFAULT_TRACK_BLOCK, Snapshot, TrackedDevice, WriteGate
from services.replica.settings import InitialMethod
from services.replica.states import Event, ReplicationState
from services.replica.telemetry import ReplicaTelemetry
from services.replica.vhd.device import Buffer, merge_ranges

log = logging.getLogger(__name__)


class CycleKind(enum.Enum):
    """What a cycle does, decided from the VM's record when it starts (``kind_of``); the value is the
    name traces and logs show."""

    INITIAL = "initial"  # the whole disk (its allocated ranges) over the network
    EXPORT = "export"  # the whole disk into an export file (initial replication by external media)
    EXISTING_COPY = "existing_copy"  # the blocks that differ from a copy placed at the DR site
    DELTA = "delta"  # the blocks written since the last cut
    RESYNC = "resync"  # the blocks that differ from the DR site's replica
    AWAIT_IMPORT = "await_import"  # no transfer: has the DR site imported the export yet?

    @property
    def full(self) -> bool:
        """The delta carries the whole disk (a full transfer at the DR site)."""
        return self in (CycleKind.INITIAL, CycleKind.EXPORT)

    @property
    def initial(self) -> bool:
        """The cycle is an initial replication."""
        return self in (CycleKind.INITIAL, CycleKind.EXPORT, CycleKind.EXISTING_COPY)

    @property
    def compares_hashes(self) -> bool:
        """The cycle ships the blocks whose hashes differ from the DR site's."""
        return self in (CycleKind.RESYNC, CycleKind.EXISTING_COPY)


@dataclass(frozen=True)
class Extent:
    disk: str
    offset: int
    length: int


def cut(disks: dict[str, TrackedDevice], gate: WriteGate, full: bool) -> dict[str, Snapshot]:
    """Phase 1: a snapshot of every disk of the VM at ONE instant (``full`` covers every block): the
    VM's gate keeps writes to all of its disks out while the disks are cut one after the other."""
    snapshots: dict[str, Snapshot] = {}
    gate.lock()
    try:
        for name, device in disks.items():
            snapshots[name] = device.snapshot(full=full)
    except Exception:
        release(snapshots, shipped=False)
        raise
    finally:
        gate.unlock()
    return snapshots


def release(snapshots: dict[str, Snapshot], shipped: bool) -> None:
    """End the cycle's snapshots; unshipped blocks go back into the tracking log for the next cut."""
    for snapshot in snapshots.values():
        snapshot.release(shipped)


def plan(
    snapshots: dict[str, Snapshot],
    disks: dict[str, TrackedDevice],
    kind: CycleKind,
    differing: dict[str, list[tuple[int, int]]] | None = None,
) -> list[Extent]:
    """Phase 2: the chunk extents, in order. Initial transfers skip unallocated ranges (sparse-aware);
    resync and existing-copy transfers send only the ranges whose hashes differ."""
    full = kind.full
    extents: list[Extent] = []
    for name in sorted(snapshots):
        snapshot = snapshots[name]
        if differing is not None:
            ranges = differing.get(name, [])
        elif full:
            ranges = merge_ranges(disks[name].allocated_ranges())
        else:
            ranges = snapshot.byte_ranges()
        for offset, length in ranges:
            extents += [Extent(name, o, n) for o, n in split_extent(offset, length, DEFAULT_CHUNK_BYTES)]
    return extents


def differing_ranges(
    snapshot: Snapshot, remote: Iterator[replica_pb2.BlockHashes], block_size: int
) -> list[tuple[int, int]]:
    """The block ranges where the snapshot's content differs from the DR site's digests."""
    remote_digests: dict[int, bytes] = {}
    for message in remote:
        for i in range(0, len(message.digests), 32):
            remote_digests[message.first_block + i // 32] = message.digests[i : i + 32]
    size = snapshot.cut.disk_size
    step = max(block_size, (4 * 1024 * 1024) // block_size * block_size)
    ranges: list[tuple[int, int]] = []
    for offset in range(0, size, step):
        data = snapshot.read(offset, min(step, size - offset))
        local = block_digests(data, block_size)
        first = offset // block_size
        for i in range(0, len(local), 32):
            block = first + i // 32
            if remote_digests.get(block) != local[i : i + 32]:
                start = block * block_size
                ranges.append((start, min(block_size, size - start)))
    return merge_ranges(ranges)


def messages(
    header: replica_pb2.DeltaHeader,
    extents: Sequence[Extent],
    snapshots: dict[str, Snapshot],
    *,
    codec: ChunkCodec,
    progress: Progress,
    bucket: TokenBucket | None,
    abort: threading.Event | None = None,
) -> Iterator[replica_pb2.DeltaMessage | bytes]:
    """The delta stream from chunk ``header.resume_from`` on; it ends early (incomplete, so the DR site
    keeps it staged and commits nothing) when ``abort`` is set. Chunk messages come serialized
    (``wire.encode_message``: the data is copied once, not four times). The time the transport takes
    each message (until it asks for the next) tells the codec's compressor how fast the link is."""
    yield replica_pb2.DeltaMessage(header=header)
    clock = codec.compressor.clock

    def encoded() -> Iterator[tuple[list[Buffer], int]]:
        for index in range(header.resume_from, len(extents)):
            if abort is not None and abort.is_set():
                return
            extent = extents[index]
            data = snapshots[extent.disk].read(extent.offset, extent.length)
            chunk = codec.encode(extent.disk, extent.offset, data, index)
            size = sum(len(part) for part in chunk)
            if bucket is not None:
                wait = bucket.take(size, time.monotonic())
                if wait:
                    time.sleep(wait)
            progress.add(extent.length)
            yield chunk, size

    for chunks in batches(encoded(), DEFAULT_CHUNK_BYTES):
        message = encode_message(chunks)
        handed = clock()
        yield message
        codec.compressor.observe_send(len(message), clock() - handed)
        if abort is not None and abort.is_set():
            return
    yield replica_pb2.DeltaMessage(end_of_delta=len(extents))


def kind_of(vm: VmReplication) -> CycleKind:
    """What the VM's next cycle does, from its record and policy."""
    if vm.record.state == ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION:
        return CycleKind.AWAIT_IMPORT
    if not vm.record.initial_done:
        method = vm.policy.initial_method
        if method == InitialMethod.EXTERNAL_MEDIA:
            return CycleKind.EXPORT
        return CycleKind.EXISTING_COPY if method == InitialMethod.EXISTING_COPY else CycleKind.INITIAL
    if (
        vm.force_resync
        or vm.record.resync_required
        or any(d.tracker.resync_required for d in vm.disks.values())
    ):
        return CycleKind.RESYNC
    return CycleKind.DELTA


def run(
    vm: VmReplication,
    sender: Sender,
    telemetry: ReplicaTelemetry,
    abort: threading.Event,
    *,
    endpoint: str = "",
    planned: bool = False,
) -> None:
    """One cycle of ``vm``, start to commit (the caller holds ``vm.running``). A failure is recorded in
    the VM's state and raised; ``abort`` (shutdown) stops it without counting as a failure.
    ``endpoint``: this site's, for the DR site; ``planned``: the last delta before a planned failover."""
    kind = kind_of(vm)
    if kind == CycleKind.AWAIT_IMPORT:
        _check_import(vm, sender)
        return
    start_mono, start_ns = time.monotonic(), time.time_ns()
    vm.cycle_started = start_mono
    if kind.initial:
        vm.event(Event.START_INITIAL)
    elif kind == CycleKind.RESYNC:
        vm.event(Event.START_RESYNC)
    else:
        vm.event(Event.CYCLE_STARTED)
    snapshots: dict[str, Any] = {}
    shipped = False
    try:
        # An export is imported by a DR site not asked here: it gets the checksum every site verifies.
        receiver = None if kind == CycleKind.EXPORT else sender.receiver_state(vm.name)
        committed = receiver.committed_sequence if receiver is not None else 0
        if committed == 0 and kind in (CycleKind.DELTA, CycleKind.RESYNC):
            # The DR site lost (or an operator removed) the replica: deltas have nothing to apply to.
            with vm.state_lock:
                vm.record = replace(vm.record, initial_done=False)
            raise ReplicaLost(
                f"the DR site has no replica of VM {vm.name!r} any more; "
                "the next cycle starts a new initial replication"
            )
        with telemetry.phase("cut", {"overland.kind": kind.value}):
            snapshots = cut(vm.disks, vm.gate, full=kind != CycleKind.DELTA)
        vm.phase_seconds["cut"] = time.monotonic() - start_mono
        header = _header(vm, kind, committed + 1, start_ns)
        header.primary_endpoint = endpoint
        header.planned_failover = planned
        with telemetry.phase("plan"):
            extents = _plan(vm, kind, snapshots, sender)
        total = sum(e.length for e in extents)
        vm.progress.plan(total)
        codec = ChunkCodec(
            Compressor(vm.policy.compression, time.perf_counter, limit=vm.policy.bandwidth_limit),
            checksum_for(list(receiver.chunk_checksums)) if receiver is not None else Checksum.BLAKE3,
        )
        bucket = (
            TokenBucket(vm.policy.bandwidth_limit, max(vm.policy.bandwidth_limit, 1024 * 1024))
            if vm.policy.bandwidth_limit
            else None
        )

        def stream(attempt: replica_pb2.DeltaHeader) -> Any:
            return messages(
                attempt,
                extents,
                snapshots,
                codec=codec,
                progress=vm.progress,
                bucket=bucket,
                abort=abort,
            )

        if kind == CycleKind.EXPORT:
            media.write_export(Path(vm.policy.export_path), stream(header))
            shipped = True
            vm.last_sequence = header.sequence
            vm.event(Event.EXPORT_DONE)
            return
        streamed = time.monotonic()
        sent = {"overland.sequence": header.sequence, "overland.bytes": total}
        with telemetry.phase("stream", sent):
            ack = sender.send(header, stream, total)
        vm.phase_seconds["stream_and_commit"] = time.monotonic() - streamed
        shipped = True
        with telemetry.phase("commit"):
            commit(vm, kind, ack, start_mono=start_mono, start_ns=start_ns, total=total)
    except CycleAborted:
        # Shutting down is not a failure of the replication: state and health stay as they were.
        raise
    except ReplicaStorageFull as error:
        _fail(vm, start_mono, start_ns, Event.STORAGE_FULL, f"DR site storage full: {error.message}")
        raise
    except ServiceError as error:
        _fail(vm, start_mono, start_ns, Event.CYCLE_FAILED, error.message)
        raise
    except (OSError, grpc.RpcError) as error:
        _fail(vm, start_mono, start_ns, Event.CYCLE_FAILED, f"{type(error).__name__}: {error}")
        raise
    finally:
        release(snapshots, shipped)


def _header(vm: VmReplication, kind: CycleKind, sequence: int, cut_ns: int) -> replica_pb2.DeltaHeader:
    return replica_pb2.DeltaHeader(
        vm_name=vm.name,
        sequence=sequence,
        disk_sizes={name: d.virtual_size for name, d in vm.disks.items()},
        vm=vm.request.vm,
        full=kind.full,
        existing_copy=kind == CycleKind.EXISTING_COPY,
        cut_time_unix_nanos=cut_ns,
        additional_recovery_points=vm.policy.additional_recovery_points,
        # A reverse replication keeps them (the DR site knows its own way back).
        settings=replica_pb2.ReplicationSettings(
            frequency_seconds=vm.request.settings.frequency_seconds,
            additional_recovery_points=vm.request.settings.additional_recovery_points,
            compression=vm.request.settings.compression,
            bandwidth_limit_bytes_per_second=vm.request.settings.bandwidth_limit_bytes_per_second,
        ),
    )


def _plan(vm: VmReplication, kind: CycleKind, snapshots: dict[str, Any], sender: Sender) -> list[Extent]:
    differing = None
    if kind.compares_hashes:
        differing = {
            name: differing_ranges(
                snapshot, sender.block_hashes(vm.name, name, DEFAULT_TRACK_BLOCK), DEFAULT_TRACK_BLOCK
            )
            for name, snapshot in snapshots.items()
        }
    return plan(snapshots, vm.disks, kind, differing)


def commit(
    vm: VmReplication,
    kind: CycleKind,
    ack: replica_pb2.DeltaAck,
    *,
    start_mono: float,
    start_ns: int,
    total: int,
) -> None:
    """Phase 4: the DR site committed; record the sequence, the statistics and the state."""
    vm.last_sequence = ack.sequence
    latency = time.monotonic() - start_mono
    outcome = states.CycleOutcome(
        start_ns,
        ok=True,
        latency_seconds=latency,
        delta_bytes=total,
        overran=latency > vm.policy.frequency_seconds,
    )
    if kind in (CycleKind.INITIAL, CycleKind.EXISTING_COPY):
        event = Event.INITIAL_DONE
    elif kind == CycleKind.RESYNC:
        event = Event.RESYNC_DONE
    else:
        event = Event.CYCLE_OK
    with vm.state_lock:
        vm.record = vm.record.with_cycle(outcome)
        vm.force_resync = False
        if event in vm.record.allowed():
            vm.event(event)
        else:
            # Paused (or disabled) while the cycle ran: the data is committed, the pause stands.
            vm.record = replace(
                vm.record,
                last_sync_nanos=time.time_ns(),
                initial_done=vm.record.initial_done or event == Event.INITIAL_DONE,
                resync_required=vm.record.resync_required and event != Event.RESYNC_DONE,
            )
            vm.save()
    log.info(
        "cycle committed",
        extra={
            "vm": vm.name,
            "kind": kind.value,
            "seq": ack.sequence,
            "bytes": total,
            "seconds": round(latency, 3),
            **{f"{phase}_s": round(seconds, 3) for phase, seconds in vm.phase_seconds.items()},
        },
    )


def _fail(vm: VmReplication, start_mono: float, start_ns: int, event: Event, reason: str) -> None:
    latency = time.monotonic() - start_mono
    with vm.state_lock:
        vm.record = vm.record.with_cycle(
            states.CycleOutcome(start_ns, ok=False, latency_seconds=latency, delta_bytes=0)
        )
        if event in vm.record.allowed():
            vm.event(event, reason)
        else:
            vm.save()


def _check_import(vm: VmReplication, sender: Sender) -> None:
    """External media: the initial replica is complete once the DR site imported the export."""
    state = sender.receiver_state(vm.name)
    if state.committed_sequence >= vm.last_sequence > 0:
        vm.event(Event.INITIAL_DONE)
