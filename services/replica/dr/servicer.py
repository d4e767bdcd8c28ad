"""ReplicaReceiverService: the DR site's gRPC face over ``VmStore`` — authorization, staging, commit.

Who is calling: with TLS the primary's name is its client certificate's CN (the server requires a
client certificate signed by the configured CA); without TLS it is the ``x-overland-primary``
header, which is for local development only: it is believed from loopback callers alone (anyone
else could name any primary) unless ``--insecure-primary-header`` says otherwise. Either way the name
must be in the allow-list, which also picks the storage location.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
from google.protobuf import message_factory

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.clock import SYSTEM_CLOCK, Clock
from services.common.config import is_loopback
from services.common.errors import FieldViolation, InvalidArgument
from services.replica.codec.chunks import decode_chunk
from services.replica.codec.media import read_export
from services.replica.codec.wire import Received, chunks_of, parse_message
from services.replica.config import PRIMARY_HEADER, ReplicaConfig
from services.replica.disks import SiteDisks
from services.replica.dr.export import export_point
from services.replica.dr.layout import Layout
from services.replica.dr.staging import Staging
from services.replica.dr.store import VmStore
from services.replica.errors import (
    ChunkCorrupted,
    InvalidReplicationSettings,
    MalformedDelta,
    ReplicaStorageFull,
    SequenceError,
    UnauthorizedPrimary,
    UnknownVm,
)
from services.replica.settings import validate_name
from services.replica.telemetry import APPLY_SPAN, COMMIT_SPAN, ReplicaTelemetry

log = logging.getLogger(__name__)

# A new stream for a VM waits this long for a previous one (e.g. a connection the network cut) to end.
STREAM_LOCK_SECONDS = 15.0
MIN_HASH_BLOCK = 4096
MAX_HASH_BLOCK = 16 * 1024 * 1024


def peer_is_local(peer: str) -> bool:
    """Whether a gRPC peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:/path``) is on this
    host: a loopback address or a unix socket."""
    scheme, _, address = peer.partition(":")
    if scheme in ("unix", "unix-abstract"):
        return True
    if scheme not in ("ipv4", "ipv6"):
        return False
    return is_loopback(address.rpartition(":")[0])


class ReceiverServicer(replica_pb2_grpc.ReplicaReceiverServiceServicer):
    """One DR site: a ``VmStore`` per (primary, VM), created on first use."""

    def __init__(
        self,
        config: ReplicaConfig,
        telemetry: ReplicaTelemetry | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        disks: SiteDisks | None = None,
    ):
        self._telemetry = telemetry or ReplicaTelemetry(None)
        self._clock = clock
        self._allowed = dict(config.allowed_primaries)
        self._site_name = config.site_name
        self._tls = config.server.tls is not None
        self._header_from_anyone = config.insecure_primary_header
        self._fault_apply_delay = config.fault_apply_delay_seconds
        self._disks = disks
        self._stores: dict[tuple[str, str], VmStore] = {}
        self._lock = threading.Lock()
        # Told of every commit (the site defines the replica VM) and asked to adopt (a reversed
        # failover); set by the site's failover once it exists.
        self.committed: Callable[[str, str, VmStore], None] = lambda _primary, _vm, _store: None
        self.adopter: (
            Callable[[str, replica_pb2.AdoptReplicaRequest], replica_pb2.AdoptReplicaResponse] | None
        ) = None
        # Replicas with point disks open them now, before the site's VMs (which run on them) do.
        for primary, vm_name in self.known():
            if Layout(self._allowed[primary] / vm_name).load().point_disks:
                self.store(primary, vm_name)

    def identity(self, context: grpc.ServicerContext) -> str:
        if self._tls:
            names = [bytes(n) for n in context.auth_context().get("x509_common_name", [])]
            name = names[0].decode() if names else ""
            source = "client certificate CN"
        else:
            peer = context.peer()
            if not (self._header_from_anyone or peer_is_local(peer)):
                raise UnauthorizedPrimary(
                    f"this site has no TLS: it believes the {PRIMARY_HEADER} header of loopback callers "
                    f"only, and {peer} is not one (give the site TLS with --tls-client-ca, or "
                    "--insecure-primary-header)"
                )
            value = dict(context.invocation_metadata()).get(PRIMARY_HEADER, "")
            name = value.decode() if isinstance(value, bytes) else value
            source = f"{PRIMARY_HEADER} header"
        return self._authorize(name, source)

    def _authorize(self, name: str, source: str) -> str:
        if name not in self._allowed:
            # The caller learns that it is refused, never who is allowed (the allow-list is the DR
            # administrator's business); the DR site's log names the caller.
            log.warning("primary refused", extra={"primary": name, "source": source})
            raise UnauthorizedPrimary(
                f"primary {name!r} (from the {source}) is not allowed to replicate to this site: "
                "its administrator allows a site with --allow NAME=DIR"
            )
        return name

    def known(self) -> list[tuple[str, str]]:
        """Every (primary, VM) this site keeps a replica of."""
        found = []
        for primary, root in sorted(self._allowed.items()):
            if root.is_dir():
                found += [(primary, path.parent.name) for path in sorted(root.glob("*/state.json"))]
        return found

    def with_point_disks(self) -> list[tuple[str, VmStore]]:
        """The open replicas that have point disks, with their primaries' names."""
        with self._lock:
            return [(key[0], store) for key, store in sorted(self._stores.items()) if store.point_disks]

    def find(self, vm_name: str) -> tuple[str, VmStore] | None:
        """The replica of ``vm_name`` this site keeps, and its primary's name, if it keeps one."""
        for primary, name in self.known():
            if name == vm_name:
                return primary, self.store(primary, name)
        return None

    def store(self, primary: str, vm_name: str) -> VmStore:
        violations = validate_name(vm_name, "vm_name")
        if violations:
            raise InvalidReplicationSettings(f"bad VM name {vm_name!r}", violations)
        with self._lock:
            key = (primary, vm_name)
            if key not in self._stores:
                root = self._allowed[primary]
                root.mkdir(parents=True, exist_ok=True)
                self._stores[key] = VmStore(
                    root, vm_name, self._fault_apply_delay, self._clock.time_ns, owner=self._disks
                )
            return self._stores[key]

    def point_counts(self) -> list[tuple[str, str, int]]:
        """(primary, VM, recovery points) of the replicas this process has opened (a metric)."""
        with self._lock:
            stores = list(self._stores.items())
        # A snapshot of each list, as ListRecoveryPoints reads it: never waiting for a transfer.
        return [(primary, vm, len(store.state.points)) for (primary, vm), store in stores]

    def SendDelta(  # noqa: N802 (gRPC method name)
        self, request_iterator: Iterator[Received], context: grpc.ServicerContext
    ) -> replica_pb2.DeltaAck:
        return self.receive(self.identity(context), request_iterator)

    def receive(self, primary: str, messages: Iterable[Received]) -> replica_pb2.DeltaAck:
        """Stage a delta stream and commit it; shared by the network and the external-media import."""
        stream = iter(messages)
        first = next(stream, None)
        if not isinstance(first, replica_pb2.DeltaMessage) or first.WhichOneof("body") != "header":
            raise MalformedDelta("a delta stream must start with its header")
        header = first.header
        store = self.store(primary, header.vm_name)
        if not store.lock.acquire(timeout=STREAM_LOCK_SECONDS):
            raise SequenceError(f"another delta for VM {header.vm_name!r} is still being received")
        try:
            received = {"overland.vm": header.vm_name, "overland.sequence": header.sequence}
            with self._telemetry.phase(APPLY_SPAN, received):
                ack = self._receive_locked(store, header, stream)
        finally:
            store.lock.release()
        self.committed(primary, header.vm_name, store)
        return ack

    def _receive_locked(
        self, store: VmStore, header: replica_pb2.DeltaHeader, stream: Iterator[Received]
    ) -> replica_pb2.DeltaAck:
        staging = store.begin(header)
        sizes = dict(header.disk_sizes)
        finished = False
        try:
            for message in stream:
                chunks = chunks_of(message)
                if chunks is not None:
                    for chunk in chunks:
                        data = decode_chunk(chunk, sizes, staging.chunks)
                        staging.add(chunk.index, chunk.disk, chunk.offset, data, chunk.zero)
                elif isinstance(message, replica_pb2.DeltaMessage) and message.HasField("end_of_delta"):
                    with self._telemetry.phase(COMMIT_SPAN, {"overland.chunks": message.end_of_delta}):
                        ack = staging.finish(message.end_of_delta)
                    finished = True
                    log.info(
                        "delta committed",
                        extra={"vm": header.vm_name, "seq": header.sequence, "chunks": ack.chunks_applied},
                    )
                    return ack
                else:
                    raise MalformedDelta("a delta stream carries exactly one header, first")
            raise MalformedDelta(f"delta {header.sequence} ended without end_of_delta")
        except ReplicaStorageFull:
            staging.close()
            store.discard_staging()
            finished = True
            raise
        except ChunkCorrupted as error:
            log.warning("corrupted chunk rejected", extra={"vm": header.vm_name, "chunk": error.chunk_index})
            raise
        finally:
            if not finished:
                # Keep what arrived whole, so the sender resumes after it.
                _checkpoint_quietly(staging)
            staging.close()

    def GetReceiverState(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.GetReceiverStateRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ReceiverState:
        store = self.store(self.identity(context), request.vm_name)
        with store.lock:
            return store.receiver_state()

    def GetBlockHashes(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.BlockHashesRequest, context: grpc.ServicerContext
    ) -> Iterator[replica_pb2.BlockHashes]:
        size = request.block_size
        if size < MIN_HASH_BLOCK or size > MAX_HASH_BLOCK or size & (size - 1):
            raise InvalidArgument(
                f"block_size {size} must be a power of two in {MIN_HASH_BLOCK}..{MAX_HASH_BLOCK}",
                [FieldViolation("block_size", "a power of two from 4 KiB to 16 MiB")],
            )
        store = self.store(self.identity(context), request.vm_name)
        with store.lock:
            yield from store.block_hashes(request.disk, size)

    def ListRecoveryPoints(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ListRecoveryPointsRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ListRecoveryPointsResponse:
        store = self.store(self.identity(context), request.vm_name)
        # Not under the stream lock: listing must not wait for a transfer (it reads a snapshot of the list).
        return replica_pb2.ListRecoveryPointsResponse(recovery_points=store.recovery_points())

    def ImportInitialReplica(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ImportInitialReplicaRequest, context: grpc.ServicerContext
    ) -> replica_pb2.DeltaAck:
        primary = self._authorize(request.primary, "request")
        path = Path(request.path)
        if not path.is_file():
            raise InvalidArgument(
                f"export file not found at the DR site: {path}", [FieldViolation("path", "no such file")]
            )
        return self.receive(primary, read_export(path))

    def AdoptReplica(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.AdoptReplicaRequest, context: grpc.ServicerContext
    ) -> replica_pb2.AdoptReplicaResponse:
        caller = self.identity(context)
        if self.adopter is None:
            raise UnknownVm(f"this site keeps no VM {request.vm_name!r} to adopt")
        return self.adopter(caller, request)

    def CheckReplicaServer(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.CheckReplicaServerRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ReplicaServerCheck:
        primary = self.identity(context)
        root = self._allowed[primary]
        root.mkdir(parents=True, exist_ok=True)
        usage = os.statvfs(root)
        replica = 0
        if request.vm_name:
            violations = validate_name(request.vm_name, "vm_name")
            if violations:
                raise InvalidReplicationSettings(f"bad VM name {request.vm_name!r}", violations)
            folder = root / request.vm_name
            replica = (
                sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file())
                if folder.exists()
                else 0
            )
        return replica_pb2.ReplicaServerCheck(
            site_name=self._site_name,
            primary=primary,
            free_bytes=usage.f_bavail * usage.f_frsize,
            total_bytes=usage.f_blocks * usage.f_frsize,
            replica_bytes=replica,
        )

    def ExportRecoveryPoint(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ExportRecoveryPointRequest, context: grpc.ServicerContext
    ) -> Iterator[replica_pb2.RecoveryPointData]:
        store = self.store(self._holder(request.primary, request.vm_name), request.vm_name)
        yield from export_point(store, request.point_id, request.disk)

    def _holder(self, primary: str, vm_name: str) -> str:
        """The primary whose replica of ``vm_name`` an administrator means: the one named, else the only
        one this site holds a replica of that VM for."""
        if primary:
            return self._authorize(primary, "request")
        holders = [name for name, known_vm in self.known() if known_vm == vm_name]
        if not holders:
            raise UnknownVm(f"this site holds no replica of VM {vm_name!r}")
        if len(holders) > 1:
            raise InvalidArgument(
                f"this site holds replicas of VM {vm_name!r} from {', '.join(holders)}: name one (--primary)",
                [FieldViolation("primary", "required: several primaries have a VM of that name")],
            )
        return holders[0]


def _checkpoint_quietly(staging: Staging) -> None:
    """Best effort: a failure here only means the sender resends more."""
    try:
        staging.checkpoint(staging.chunks)
    except OSError as error:
        log.warning("could not checkpoint staging", extra={"error": str(error)})
    except ReplicaStorageFull as error:
        log.warning("could not checkpoint staging", extra={"error": error.message})


_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_receiver_to_server(servicer: ReceiverServicer, server: grpc.Server) -> None:
    """Register the service as the generated helper would, except that ``SendDelta`` reads its
    requests with ``wire.parse_message`` (chunk data as views of the received bytes, not copies)."""
    service = replica_pb2.DESCRIPTOR.services_by_name["ReplicaReceiverService"]
    handlers = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=parse_message if method.name == "SendDelta" else request.FromString,
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
