"""The client side of the delta stream at the primary: the channel to the DR site, and ``Sender``, which
streams a delta over ``SendDelta`` and resumes it after a failure from the chunk the DR site holds.

The DR site's gRPC errors come back as the replica's typed errors (``as_error``), so a cycle's failure
says what the DR site said.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from overland.config import TlsFiles
from overland.defaults import MAX_MESSAGE_BYTES
from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
)
from services.replica.codec.wire import serialize
from services.replica.errors import CycleAborted, ReplicaStorageFull, ReplicaUnreachable

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


def channel_to(endpoint: str, tls: TlsFiles | None) -> grpc.Channel:
    """A channel to a DR site: mutual TLS when ``tls`` is set, else insecure (development only)."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Notice a dead peer (a cut network) within seconds instead of at the stream deadline.
        ("grpc.keepalive_time_ms", 5000),
        ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if tls is None:
        return grpc.insecure_channel(endpoint, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(endpoint, tls.credentials(), options=options)


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
            raise as_error(error, "asking the DR site for its state") from None

    def recovery_points(self, vm_name: str) -> list[replica_pb2.RecoveryPoint]:
        try:
            response = self.stub.ListRecoveryPoints(
                replica_pb2.ListRecoveryPointsRequest(vm_name=vm_name),
                timeout=RPC_SECONDS,
                metadata=self.metadata,
            )
        except grpc.RpcError as error:
            raise as_error(error, "listing recovery points") from None
        return list(response.recovery_points)

    def block_hashes(self, vm_name: str, disk: str, block_size: int) -> Iterator[replica_pb2.BlockHashes]:
        try:
            yield from self.stub.GetBlockHashes(
                replica_pb2.BlockHashesRequest(vm_name=vm_name, disk=disk, block_size=block_size),
                timeout=600,
                metadata=self.metadata,
            )
        except grpc.RpcError as error:
            raise as_error(error, "reading block hashes at the DR site") from None

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
                    raise as_error(error, f"sending delta {header.sequence}") from None
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
        raise as_error(last, f"sending delta {header.sequence} after {MAX_ATTEMPTS} attempts")

    def _resume_point(self, header: replica_pb2.DeltaHeader) -> int:
        try:
            state = self.receiver_state(header.vm_name)
        except ReplicaUnreachable:
            return 0
        return state.staged_chunks if state.staged_sequence == header.sequence else 0


def as_error(error: grpc.RpcError, what: str) -> Exception:
    """The replica error for a failed call to the DR site (its category is the call's status code)."""
    by_code: dict[grpc.StatusCode, type[ServiceError]] = {
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.DATA_LOSS: DataLoss,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ReplicaStorageFull,
    }
    category = by_code.get(error.code(), ReplicaUnreachable)
    return category(f"DR site error while {what}: {error.code().name}: {error.details()}")
