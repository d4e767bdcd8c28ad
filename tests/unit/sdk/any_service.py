"""A gRPC server that answers every method of every Overland service the same way: an empty response
(every field at its default), or a chosen status. For tests that drive every CLI command and care how
the command takes the answer, not what the answer says."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

import overland.v1

# Every method of every Overland API (each *_pb2 module of overland.v1), by its path, with whether
# it streams requests and responses.
_MODULES = [
    importlib.import_module(f"overland.v1.{info.name}")
    for info in pkgutil.iter_modules(overland.v1.__path__)
    if info.name.endswith("_pb2")
]
_STREAMING: dict[str, tuple[bool, bool]] = {
    f"/{service.full_name}/{method.name}": (method.client_streaming, method.server_streaming)
    for module in _MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}


@dataclass
class Answer:
    """What every call gets: OK with an empty message, or ``code`` with ``message``."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def _respond(self, context: grpc.ServicerContext) -> bytes:
        if self.answer.code != grpc.StatusCode.OK:
            context.abort(self.answer.code, self.answer.message)
        return b""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        streaming = _STREAMING.get(handler_call_details.method)
        if streaming is None:
            return None
        requests, responses = streaming

        def unary(_request: bytes, context: grpc.ServicerContext) -> bytes:
            return self._respond(context)

        def drain(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            for _ in request_iterator:
                pass
            return self._respond(context)

        def stream(_request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
            self._respond(context)
            yield from ()

        if requests and responses:
            return grpc.stream_stream_rpc_method_handler(lambda it, ctx: stream(drain(it, ctx), ctx))
        if requests:
            return grpc.stream_unary_rpc_method_handler(drain)
        if responses:
            return grpc.unary_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(unary)


@dataclass
class AnyService:
    answer: Answer
    address: str
    server: grpc.Server

    def stop(self) -> None:
        self.server.stop(0).wait()


def start_any_service() -> AnyService:
    answer = Answer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[_Handler(answer)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return AnyService(answer, f"127.0.0.1:{port}", server)
