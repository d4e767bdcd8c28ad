"""gRPC server plumbing shared by the services: TLS, health, reflection, error mapping, graceful stop."""

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
from services.common.errors import InvalidArgument, ServiceError, to_rpc_status
from services.common.request_decoding import decoded, tolerant

log = logging.getLogger(__name__)


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


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Turns every ``ServiceError`` a servicer raises into a rich gRPC status, in one place."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kwargs = {
            # A request protobuf refuses (a string that is not UTF-8) is INVALID_ARGUMENT, not INTERNAL.
            "request_deserializer": tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            behavior = decoded(handler.unary_unary, streaming=False)
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(behavior, method), **kwargs)
        if handler.stream_unary:
            behavior = decoded(handler.stream_unary, streaming=True)
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(behavior, method), **kwargs)
        if handler.unary_stream:
            behavior = decoded(handler.unary_stream, streaming=False)
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(behavior, method), **kwargs)
        if handler.stream_stream:
            behavior = decoded(handler.stream_stream, streaming=True)
            return grpc.stream_stream_rpc_method_handler(_wrap_stream(behavior, method), **kwargs)
        return handler


@dataclass
class GrpcServer:
    """A built, started server with its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]
    grace_seconds: float

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
) -> GrpcServer:
    """Create and start a server with health, reflection and error mapping.

    ``register`` adds the service's own servicers before the server starts.
    """
    config.validate()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="grpc"),
        interceptors=[*interceptors, ErrorMappingInterceptor()],
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
    built = GrpcServer(server, port, health_servicer, tuple(service_names), config.grace_seconds)
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
    event.wait()
