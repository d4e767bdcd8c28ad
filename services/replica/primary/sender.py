"""The client side of the delta stream at the primary: the channel to the DR site, and ``Sender``, which
streams a delta over ``SendDelta`` and resumes it after a failure from the chunk the DR site holds.

The DR site's gRPC errors come back as the replica's typed errors (``as_error``), so a cycle's failure
says what the DR site said.
"""

from __future__ import annotations

import logging
import random
import threading
import time
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
from services.replica.errors import CycleAborted, DrSiteError, ReplicaStorageFull, ReplicaUnreachable

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
# Retries wait 0.2 s, 0.4 s, 0.8 s, then 1 s at most (each less a random part of up to half): the
# delta goes on within about a second of the DR site answering again, and primaries that lost the
# same DR site do not come back in step.
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 1.0
# A delta keeps retrying while the DR site is unreachable for up to this long (beyond MAX_ATTEMPTS);
# then the cycle fails and the manager probes the DR site until it answers.
OUTAGE_SECONDS = 60.0
# The gRPC channel's own reconnection after a lost connection (its default grows to 2 min, which
# kept cycles failing for seconds after the DR site was back).
RECONNECT_BACKOFF_MS = 200
MAX_RECONNECT_BACKOFF_MS = 1000
RPC_SECONDS = 30.0
# How long a probe waits for the channel to (re)connect to the DR site.
PROBE_SECONDS = 1.0
# Calls a client of this site waits on (listing recovery points): under the clients' default 10 s, so
# they hear this site's UNAVAILABLE naming the DR site rather than their own DEADLINE_EXCEEDED.
QUERY_SECONDS = 5.0
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
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]
    if tls is None:
        return grpc.insecure_channel(endpoint, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(endpoint, tls.credentials(), options=options)


def backoff(failures: int, unit_random: float) -> float:
    """The wait before retry ``failures`` (1-based), given a random number in [0, 1): capped
    exponential backoff with jitter."""
    ceiling = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** min(failures - 1, 16))
    return ceiling * (1 - 0.5 * unit_random)


def unreachable(code: grpc.StatusCode) -> bool:
    """Whether a failed call means the DR site did not answer (rather than answered no)."""
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _no_report(_why: str | None) -> None:
    pass


@dataclass
class Sender:
    """Streams one delta to the DR site, resuming after failures."""

    stub: replica_pb2_grpc.ReplicaReceiverServiceStub
    metadata: tuple[tuple[str, str], ...]
    abort: threading.Event
    # SendDelta with a serializer that passes the messages ``messages`` serialized already.
    send_delta: grpc.StreamUnaryMultiCallable
    # Told why the DR site does not answer while a delta retries (None once it answers again).
    report: Callable[[str | None], None] = _no_report
    random: Callable[[], float] = random.random

    @classmethod
    def on(
        cls,
        channel: grpc.Channel,
        metadata: tuple[tuple[str, str], ...],
        abort: threading.Event,
        report: Callable[[str | None], None] = _no_report,
    ) -> Sender:
        send_delta = channel.stream_unary(
            SEND_DELTA_METHOD,
            request_serializer=serialize,
            response_deserializer=replica_pb2.DeltaAck.FromString,
        )
        stub = replica_pb2_grpc.ReplicaReceiverServiceStub(channel)
        return cls(stub, metadata, abort, send_delta, report)

    def receiver_state(self, vm_name: str, timeout: float = RPC_SECONDS) -> replica_pb2.ReceiverState:
        """The DR site's state of the VM's replica. With a short ``timeout`` it is a probe: it waits
        for the channel to (re)connect within that time rather than failing at once."""
        try:
            return self.stub.GetReceiverState(
                replica_pb2.GetReceiverStateRequest(vm_name=vm_name),
                timeout=timeout,
                metadata=self.metadata,
                wait_for_ready=timeout < RPC_SECONDS,
            )
        except grpc.RpcError as error:
            raise as_error(error, "asking the DR site for its state") from None

    def recovery_points(self, vm_name: str) -> list[replica_pb2.RecoveryPoint]:
        try:
            response = self.stub.ListRecoveryPoints(
                replica_pb2.ListRecoveryPointsRequest(vm_name=vm_name),
                timeout=QUERY_SECONDS,
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
        retry = _Retries(self.report)
        while True:
            try:
                ack = self.send_delta(stream(attempt_header), timeout=deadline, metadata=self.metadata)
            except grpc.RpcError as error:
                if self.abort.is_set():
                    raise self._stopped(header) from None
                code = error.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise ReplicaStorageFull(f"the DR site is out of space: {error.details()}") from None
                if code == grpc.StatusCode.ALREADY_EXISTS:
                    state = self.receiver_state(header.vm_name)
                    if state.committed_sequence >= header.sequence:
                        # The commit happened; only the ack was lost.
                        return replica_pb2.DeltaAck(sequence=header.sequence)
                if code not in _RETRYABLE or retry.failed(code, error.details() or ""):
                    raise as_error(
                        error, f"sending delta {header.sequence} after {retry.failures} attempts"
                    ) from None
                log.warning(
                    "delta transfer failed, resuming",
                    extra={
                        "vm": header.vm_name,
                        "seq": header.sequence,
                        "code": code.name,
                        "why": error.details(),
                    },
                )
            else:
                retry.answered()
                return ack
            attempt_header.resume_from = self._resume_point(header, retry)

    def _stopped(self, header: replica_pb2.DeltaHeader) -> CycleAborted:
        why = getattr(self.abort, "reason", "") or "the primary is shutting down"
        return CycleAborted(f"delta {header.sequence} stopped: {why}")

    def _resume_point(self, header: replica_pb2.DeltaHeader, retry: _Retries) -> int:
        """After the backoff, wait until the DR site answers (probing it), then the chunk it holds the
        delta up to. A DR site that does not answer is not sent to: a resume from chunk 0 would throw
        away what it staged."""
        while True:
            if self.abort.wait(backoff(retry.failures, self.random())):
                raise self._stopped(header)
            try:
                state = self.receiver_state(header.vm_name, timeout=PROBE_SECONDS)
            except (ReplicaUnreachable, DrSiteError) as error:
                if retry.failed(error.code, error.message):
                    raise
                continue
            retry.answered()
            return state.staged_chunks if state.staged_sequence == header.sequence else 0


class _Retries:
    """The failures of one delta's attempts: when to give up, and the outage to report meanwhile."""

    def __init__(self, report: Callable[[str | None], None]):
        self.report = report
        self.failures = 0
        self._outage_since: float | None = None

    def failed(self, code: grpc.StatusCode, details: str) -> bool:
        """Count a failure; whether to give up: after MAX_ATTEMPTS, unless the DR site has only been
        unreachable for less than OUTAGE_SECONDS."""
        self.failures += 1
        if unreachable(code):
            if self._outage_since is None:
                self._outage_since = time.monotonic()
            self.report(f"{code.name}: {details}")
        else:
            self._outage_since = None
        out_for = time.monotonic() - self._outage_since if self._outage_since is not None else 0.0
        return self.failures >= MAX_ATTEMPTS and not 0 < out_for < OUTAGE_SECONDS

    def answered(self) -> None:
        if self._outage_since is not None:
            self.report(None)
        self._outage_since = None


def as_error(error: grpc.RpcError, what: str, site: str = "DR site") -> Exception:
    """The replica error for a failed call to the DR site (or another ``site``; its category is the
    call's status code)."""
    by_code: dict[grpc.StatusCode, type[ServiceError]] = {
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.DATA_LOSS: DataLoss,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ReplicaStorageFull,
    }
    unreachable_codes = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    category = by_code.get(
        error.code(), ReplicaUnreachable if error.code() in unreachable_codes else DrSiteError
    )
    return category(f"{site} error while {what}: {error.code().name}: {error.details()}")
