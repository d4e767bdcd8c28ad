"""One replication cycle at the primary, a function per phase: cut, plan, stream (with resume), commit.

``cut`` takes a crash-consistent snapshot of every disk of the VM; ``plan`` turns it into the
deterministic list of chunk extents (so a resume skips exactly the chunks the DR site has);
``stream`` sends it over ``SendDelta`` and retries with ``resume_from`` after a corrupted chunk or a
cut connection; the caller commits (releases the snapshots as shipped) once the DR site acked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OverlandError,
    PermissionDenied,
)
from services.replica.codec.chunks import ChunkCodec, block_digests
from services.replica.codec.wire import encode_message, serialize
from services.replica.errors import CycleAborted, ReplicaStorageFull, ReplicaUnreachable
from services.replica.primary.chunking import DEFAULT_CHUNK_BYTES, TokenBucket, batches, split_extent
from services.replica.primary.tracking import Snapshot, TrackedDevice, WriteGate
from services.replica.vhd.device import merge_ranges

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
RETRY_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 4.0)
RPC_SECONDS = 30.0
# The stream deadline grows with the delta: generous enough for a slow link, still bounded.
STREAM_SECONDS_PER_MIB = 2.0
SEND_DELTA_METHOD = "/overland.v1.ReplicaReceiverService/SendDelta"
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class CycleKind:
    INITIAL = "initial"
    DELTA = "delta"
    RESYNC = "resync"
    EXISTING_COPY = "existing_copy"
    EXPORT = "export"


@dataclass(frozen=True)
class Extent:
    disk: str
    offset: int
    length: int


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
    kind: str,
    differing: dict[str, list[tuple[int, int]]] | None = None,
) -> list[Extent]:
    """Phase 2: the chunk extents, in order. Initial transfers skip unallocated ranges (sparse-aware);
    resync and existing-copy transfers send only the ranges whose hashes differ."""
    full = kind in (CycleKind.INITIAL, CycleKind.EXPORT)
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
    (``wire.encode_message``: the data is copied once, not four times)."""
    yield replica_pb2.DeltaMessage(header=header)
    lengths = [extent.length for extent in extents]
    for group in batches(lengths, header.resume_from, DEFAULT_CHUNK_BYTES):
        chunks = []
        for index in group:
            if abort is not None and abort.is_set():
                return
            extent = extents[index]
            data = snapshots[extent.disk].read(extent.offset, extent.length)
            chunk = codec.encode(extent.disk, extent.offset, data, index)
            chunks.append(chunk)
            if bucket is not None:
                wait = bucket.take(sum(len(part) for part in chunk), time.monotonic())
                if wait:
                    time.sleep(wait)
            progress.add(extent.length)
        yield encode_message(chunks)
    yield replica_pb2.DeltaMessage(end_of_delta=len(extents))


@dataclass
class Sender:
    """Streams one delta to the DR site, resuming after failures."""

    stub: replica_pb2_grpc.ReplicaReceiverServiceStub
    metadata: tuple[tuple[str, str], ...]
    abort: threading.Event
    # SendDelta with a serializer that passes the messages ``messages`` serialized already.
    send_delta: grpc.StreamUnaryMultiCallable

    @classmethod
    def on(
        cls, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], abort: threading.Event
    ) -> Sender:
        send_delta = channel.stream_unary(
            SEND_DELTA_METHOD,
            request_serializer=serialize,
            response_deserializer=replica_pb2.DeltaAck.FromString,
        )
        return cls(replica_pb2_grpc.ReplicaReceiverServiceStub(channel), metadata, abort, send_delta)

    def receiver_state(self, vm_name: str) -> replica_pb2.ReceiverState:
        try:
            return self.stub.GetReceiverState(
                replica_pb2.GetReceiverStateRequest(vm_name=vm_name),
                timeout=RPC_SECONDS,
                metadata=self.metadata,
            )
        except grpc.RpcError as error:
            raise _as_error(error, "asking the DR site for its state") from None

    def block_hashes(self, vm_name: str, disk: str, block_size: int) -> Iterator[replica_pb2.BlockHashes]:
        try:
            yield from self.stub.GetBlockHashes(
                replica_pb2.BlockHashesRequest(vm_name=vm_name, disk=disk, block_size=block_size),
                timeout=600,
                metadata=self.metadata,
            )
        except grpc.RpcError as error:
            raise _as_error(error, "reading block hashes at the DR site") from None

    def send(
        self,
        header: replica_pb2.DeltaHeader,
        stream: Callable[[replica_pb2.DeltaHeader], Iterator[replica_pb2.DeltaMessage | bytes]],
        total_bytes: int,
    ) -> replica_pb2.DeltaAck:
        """Send until acked. After a failure, ask the DR site how many chunks it holds and resume there."""
        attempt_header = replica_pb2.DeltaHeader()
        attempt_header.CopyFrom(header)
        deadline = RPC_SECONDS + STREAM_SECONDS_PER_MIB * total_bytes / (1024 * 1024)
        last: grpc.RpcError | None = None
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self.send_delta(stream(attempt_header), timeout=deadline, metadata=self.metadata)
            except grpc.RpcError as error:
                if self.abort.is_set():
                    raise CycleAborted(
                        f"delta {header.sequence} stopped: the primary is shutting down"
                    ) from None
                code = error.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise ReplicaStorageFull(f"the DR site is out of space: {error.details()}") from None
                if code == grpc.StatusCode.ALREADY_EXISTS:
                    state = self.receiver_state(header.vm_name)
                    if state.committed_sequence >= header.sequence:
                        # The commit happened; only the ack was lost.
                        return replica_pb2.DeltaAck(sequence=header.sequence)
                if code not in _RETRYABLE:
                    raise _as_error(error, f"sending delta {header.sequence}") from None
                last = error
                log.warning(
                    "delta transfer failed, resuming",
                    extra={
                        "vm": header.vm_name,
                        "seq": header.sequence,
                        "code": code.name,
                        "why": error.details(),
                    },
                )
            if self.abort.wait(RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS) - 1)]):
                raise CycleAborted(f"delta {header.sequence} stopped: the primary is shutting down")
            attempt_header.resume_from = self._resume_point(header)
        assert last is not None
        raise _as_error(last, f"sending delta {header.sequence} after {MAX_ATTEMPTS} attempts")

    def _resume_point(self, header: replica_pb2.DeltaHeader) -> int:
        try:
            state = self.receiver_state(header.vm_name)
        except ReplicaUnreachable:
            return 0
        return state.staged_chunks if state.staged_sequence == header.sequence else 0


def _as_error(error: grpc.RpcError, what: str) -> Exception:
    by_code: dict[grpc.StatusCode, type[OverlandError]] = {
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.DATA_LOSS: DataLoss,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ReplicaStorageFull,
    }
    category = by_code.get(error.code(), ReplicaUnreachable)
    return category(f"DR site error while {what}: {error.code().name}: {error.details()}")
