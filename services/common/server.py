"""gRPC server plumbing shared by the services: TLS, health, reflection, error mapping, stream slots,
graceful stop (docs/servers.md)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from overland.config import TlsFiles
from overland.defaults import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from services.common.config import ServerConfig
from services.common.errors import InvalidArgument, ResourceExhausted, ServiceError, to_rpc_status
from services.common.request_decoding import decoded, tolerant

log = logging.getLogger(__name__)

# How often the main thread wakes while it waits for a stop signal (see wait_for_signal).
SIGNAL_POLL_SECONDS = 0.2


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """The server side of ``tls``: its certificate and key, and with ``ca`` mutual TLS (clients must
    present a certificate that CA signed)."""
    if tls.cert is None or tls.key is None:
        raise InvalidArgument("server TLS needs a certificate and its key")
    root = tls.ca.read_bytes() if tls.ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def _abort(context: grpc.ServicerContext, error: ServiceError) -> None:
    # set_code first so that a tracing interceptor wrapping the context records the status code
    # (abort_with_status alone bypasses it); only server-side codes mark its span as an error.
    context.set_code(error.code)
    context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))


def _internal(context: grpc.ServicerContext, method: str) -> None:
    log.exception("unexpected error in handler", extra={"method": method})
    _abort(context, ServiceError("internal error; see the service log"))


def _is_abort(error: Exception, context: grpc.ServicerContext) -> bool:
    # grpc signals context.abort() by raising a bare Exception after setting the code.
    # grpc-stubs predates ServicerContext.code().
    code = context.code()  # type: ignore[attr-defined]
    return type(error) is Exception and code not in (None, grpc.StatusCode.OK)


def _client_gone(error: Exception, context: grpc.ServicerContext) -> bool:
    # Reading a stream whose client cancelled (or whose deadline passed) raises grpc.RpcError;
    # grpc ends such a call itself, and it is not the service's error.
    return isinstance(error, grpc.RpcError) and not context.is_active()


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except ServiceError as error:
            _abort(context, error)
        except Exception as error:
            if _is_abort(error, context) or _client_gone(error, context):
                raise
            _internal(context, method)
        raise AssertionError("unreachable: abort raises")

    return handler


def _wrap_stream(behavior: Callable[..., Iterable[Any]], method: str) -> Callable[..., Iterator[Any]]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except ServiceError as error:
            _abort(context, error)
        except Exception as error:
            if _is_abort(error, context) or _client_gone(error, context):
                raise
            _internal(context, method)

    return handler


# The handler factory of each RPC kind, named as the RpcMethodHandler attribute that holds its behavior.
_KINDS: dict[str, Callable[..., grpc.RpcMethodHandler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[Callable[..., Any], str], Callable[..., Any] | None],
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with its behavior replaced by ``wrap(behavior, kind)`` (``kind``: ``unary_unary``,
    ``unary_stream``, ``stream_unary`` or ``stream_stream``); a ``wrap`` that returns None keeps it.
    ``request_deserializer`` replaces the handler's.

    What a server interceptor that runs code around a call needs: the handler it returns must be of
    the same kind, with the same (de)serializers unless it means to change them."""
    for kind, factory in _KINDS.items():
        behavior = getattr(handler, kind)
        if behavior:
            wrapped = wrap(behavior, kind)
            if wrapped is None and request_deserializer is None:
                return handler
            return factory(
                behavior if wrapped is None else wrapped,
                request_deserializer=request_deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class BehaviorInterceptor(grpc.ServerInterceptor):
    """A server interceptor that runs code around each call: a subclass's ``wrap`` gives the behavior
    that replaces a method's (None keeps it); see ``rewrap_handler``."""

    def wrap(self, behavior: Callable[..., Any], kind: str, method: str) -> Callable[..., Any] | None:
        raise NotImplementedError

    def request_deserializer(self, handler: grpc.RpcMethodHandler) -> Callable[[bytes], Any] | None:
        """The deserializer that replaces the handler's (None keeps it)."""
        return None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return rewrap_handler(
            handler,
            lambda behavior, kind: self.wrap(behavior, kind, method),
            request_deserializer=self.request_deserializer(handler),
        )


class ErrorMappingInterceptor(BehaviorInterceptor):
    """Turns every ``ServiceError`` a servicer raises into a rich gRPC status, in one place."""

    def wrap(self, behavior: Callable[..., Any], kind: str, method: str) -> Callable[..., Any]:
        behavior = decoded(behavior, streaming=kind.startswith("stream_"))
        if kind.endswith("_unary"):
            return _wrap_unary(behavior, method)
        return _wrap_stream(behavior, method)

    def request_deserializer(self, handler: grpc.RpcMethodHandler) -> Callable[[bytes], Any] | None:
        # A request protobuf refuses (a string that is not UTF-8) is INVALID_ARGUMENT, not INTERNAL.
        return tolerant(handler.request_deserializer)


class StreamSlots:
    """How many streaming calls may run at once; each holds one of the server's threads for its
    whole life (see docs/servers.md). ``take`` never waits: a full server refuses the next stream
    with ``RESOURCE_EXHAUSTED`` at once, and unary calls keep their own threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._used = 0

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._used

    def take(self, method: str) -> None:
        """Take a slot, or raise ``ResourceExhausted`` when all are in use."""
        with self._lock:
            if self._used < self.limit:
                self._used += 1
                return
        raise ResourceExhausted(
            f"{method}: the server has {self.limit} streams open, its limit; retry later or use "
            f"another replica of the service"
        )

    def give_back(self) -> None:
        with self._lock:
            self._used -= 1


class StreamSlotInterceptor(BehaviorInterceptor):
    """Holds a ``StreamSlots`` slot for the life of every call that streams requests or responses.

    Placed inside ``ErrorMappingInterceptor``, so a refusal is a mapped ``ResourceExhausted``."""

    def __init__(self, slots: StreamSlots) -> None:
        self.slots = slots

    def wrap(self, behavior: Callable[..., Any], kind: str, method: str) -> Callable[..., Any] | None:
        slots = self.slots
        if kind == "unary_unary":
            return None
        if kind == "stream_unary":

            def client_stream(request: Any, context: grpc.ServicerContext) -> Any:
                slots.take(method)
                try:
                    return behavior(request, context)
                finally:
                    slots.give_back()

            return client_stream

        def server_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A generator: the slot is taken when gRPC starts iterating it (in its thread) and given
            # back when it ends, fails or is closed (a cancelled call).
            slots.take(method)
            try:
                yield from behavior(request, context)
            finally:
                slots.give_back()

        return server_stream


@dataclass
class GrpcServer:
    """A built, started server with its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]
    grace_seconds: float
    stream_slots: StreamSlots

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def stop(self) -> None:
        """Graceful: report NOT_SERVING, refuse new calls, let running calls finish within the grace time."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_seconds).wait()


def build_server(
    config: ServerConfig,
    service_names: Sequence[str],
    register: Callable[[grpc.Server], None],
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    authorization: grpc.ServerInterceptor | None = None,
) -> GrpcServer:
    """Create and start a server with health, reflection, error mapping and stream slots.

    ``register`` adds the service's own servicers before the server starts. ``interceptors`` run
    outside the error mapping (first is outermost), so they see the status each call ends with.
    ``authorization`` (``services.common.access.Authorization``) runs inside the error mapping, so its
    refusal is a mapped PERMISSION_DENIED, and outside the stream slots, so a refused stream takes none.
    """
    config.validate()
    slots = StreamSlots(config.stream_slots)
    server = grpc.server(
        # Streams hold a thread each but at most ``stream_slots`` of them, so ``max_workers`` threads
        # are always left for unary calls (health included): open streams never starve the service.
        futures.ThreadPoolExecutor(
            max_workers=config.max_workers + config.stream_slots, thread_name_prefix="grpc"
        ),
        interceptors=[
            *interceptors,
            ErrorMappingInterceptor(),
            *([authorization] if authorization is not None else []),
            StreamSlotInterceptor(slots),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", int(config.reuse_port)),
            # Long-lived streams (watch, delta transfer) send keepalive pings every few seconds to
            # notice a dead peer; the default policy would answer them with GOAWAY "too_many_pings".
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 4000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    if config.tls is not None:
        port = server.add_secure_port(config.bind, server_credentials(config.tls))
    else:
        port = server.add_insecure_port(config.bind)
    if port == 0:
        raise InvalidArgument(f"cannot bind {config.bind}")
    server.start()
    built = GrpcServer(server, port, health_servicer, tuple(service_names), config.grace_seconds, slots)
    built.set_serving(True)
    return built


def wait_for_signal(stop: threading.Event | None = None) -> None:
    """Block until SIGINT or SIGTERM (or ``stop`` is set). Only call from the main thread."""
    event = stop or threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        log.info("signal received, shutting down", extra={"signal": signal.Signals(signum).name})
        event.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    # Never one endless wait: the kernel may deliver the signal to any thread (gRPC's, etcd's), and then
    # Python runs the handler only when the main thread next wakes; a wait that never times out would
    # miss the signal for good.
    while not event.wait(SIGNAL_POLL_SECONDS):
        pass
