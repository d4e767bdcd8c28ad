"""The one generic mechanism behind every client method, in a sync and an asyncio flavour.

An API is a class of ``Unary`` and ``Streaming`` descriptors, each naming a stub method, a request
builder and whether the call is idempotent. The same API class, mixed with ``SyncTransport`` or
``AioTransport``, gives the sync or the asyncio client: the descriptor's ``__get__`` is typed per
transport, so ``client.get_routing_domain(rdid=...)`` is a ``RoutingDomain`` on the sync client and an
``Awaitable[RoutingDomain]`` on the asyncio one. The transports add the deadline, retries (see
``overland.retry``), paging and status-to-exception mapping in one place.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, ParamSpec, Self, TypeVar, overload

import grpc
import grpc.aio
from google.protobuf.message import Message

from overland._tls_probe import refused_certificate
from overland.config import ClientConfig, Endpoint, Service
from overland.errors import (
    CertificateRefusedError,
    ConfigurationError,
    OverlandError,
    UnavailableError,
    error_from_rpc,
)
from overland.retry import RetryPlan, RetryPolicy

P = ParamSpec("P")
T = TypeVar("T")
ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)


@dataclass(frozen=True)
class RpcSpec:
    """How to call one RPC.

    ``items`` names the repeated field a unary list call yields, page after page; without it the RPC
    is a server stream whose responses are yielded whole.
    ``resume`` gives the request that continues a broken server stream after a response, which makes
    the stream retryable mid-way (``WatchTable`` resumes from the last revision it delivered).
    ``resume_after_error`` gives the request that continues a stream the server ended with an error
    that says where to resume (None: the error is not one), which is then resumed at once, whatever
    its code (``WatchTable`` ended for a client that stopped reading).
    ``long_lived`` streams use the config's ``stream_timeout`` instead of the per-call timeout.
    """

    name: str
    idempotent: bool = False
    items: str = ""
    resume: Callable[[Any, Any], Any] | None = None
    resume_after_error: Callable[[Any, OverlandError], Any | None] | None = None
    long_lived: bool = False

    def items_of(self, response: Any) -> Iterable[Any]:
        return getattr(response, self.items) if self.items else (response,)

    def next_page(self, request: Any, response: Any) -> Any | None:
        """The request for the next page, or None after the last one (or for unpaged calls)."""
        token = getattr(response, "next_page_token", "")
        if not token:
            return None
        following = copy.copy(request)
        following.page.page_token = token
        return following

    def after(self, request: Any, response: Any) -> Any | None:
        """The request that resumes the stream after ``response``; None if it cannot resume."""
        return self.resume(request, response) if self.resume else None

    def after_error(self, request: Any, error: OverlandError) -> Any | None:
        """The request the server's ``error`` says to resume with; None if it says nothing of it."""
        return self.resume_after_error(request, error) if self.resume_after_error else None


class Unary(Generic[P, T]):
    """A unary (or client-streaming) RPC as a client method taking the builder's arguments."""

    def __init__(self, spec: RpcSpec, build: Callable[P, Any], returns: type[T]) -> None:
        self.spec = spec
        self.build = build
        self.returns = returns

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: AioTransport, owner: type) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __get__(self, obj: SyncTransport, owner: type) -> Callable[P, T]: ...
    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self

        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return obj.unary(self.spec, self.build(*args, **kwargs))

        return call


class Streaming(Generic[P, T]):
    """A list call (all pages, item by item) or a server stream, as a client method returning an iterator."""

    def __init__(self, spec: RpcSpec, build: Callable[P, Any], yields: type[T]) -> None:
        self.spec = spec
        self.build = build
        self.yields = yields

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: AioTransport, owner: type) -> Callable[P, AsyncGenerator[T, None]]: ...
    @overload
    def __get__(self, obj: SyncTransport, owner: type) -> Callable[P, Generator[T, None, None]]: ...
    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self

        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            request = self.build(*args, **kwargs)
            if not self.spec.items:
                return obj.stream(self.spec, request)
            if "page" in request.DESCRIPTOR.fields_by_name:
                request.page.page_size = request.page.page_size or obj.config.page_size
            return obj.pages(self.spec, request)

        return call


class ApiBase:
    """An API declaration: its service (for the endpoint) and its generated stub class."""

    service: ClassVar[Service]
    stub_class: ClassVar[type[Any]]


class _Transport(ApiBase, Generic[ChannelT]):
    """What both flavours share: configuration, the channel and the stub."""

    def __init__(
        self,
        endpoint: Endpoint | str | None = None,
        *,
        config: ClientConfig | None = None,
        channel: ChannelT | None = None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        """``interceptors`` are gRPC client interceptors of the flavour's kind (tracing, auth headers);
        the SDK itself depends on no tracing library."""
        config = config if config is not None else ClientConfig.from_env()
        if endpoint is not None:
            config = config.with_endpoint(self.service, endpoint)
        self.config = config
        self.endpoint = config.endpoint(self.service)
        self.channel: ChannelT = self._connect(channel, self.endpoint, interceptors)
        self._stub = self.stub_class(self.channel)

    def _connect(self, channel: ChannelT | None, endpoint: Endpoint, interceptors: Sequence[Any]) -> ChannelT:
        raise NotImplementedError

    def with_options(self, *, timeout: float | None = None, retry: RetryPolicy | None = None) -> Self:
        """A client sharing this one's channel with another default deadline or retry policy."""
        other = copy.copy(self)
        other.config = replace(
            self.config,
            timeout=self.config.timeout if timeout is None else timeout,
            retry=self.config.retry if retry is None else retry,
        )
        return other

    def _plan(self, spec: RpcSpec) -> RetryPlan:
        timeout = self.config.stream_timeout if spec.long_lived else self.config.timeout
        return RetryPlan(self.config.retry, timeout, idempotent=spec.idempotent)

    def _failure(self, rpc_error: grpc.RpcError) -> OverlandError:
        """The error of a failed call. UNAVAILABLE over mutual TLS may be the server refusing this
        client's certificate, which gRPC does not tell from an outage: a handshake of its own tells."""
        error = error_from_rpc(rpc_error)
        if isinstance(error, UnavailableError) and self.endpoint.tls is not None and self.endpoint.tls.cert:
            alert = refused_certificate(self.endpoint)
            if alert is not None:
                return CertificateRefusedError(
                    f"{self.endpoint.address} refused this client's certificate {self.endpoint.tls.cert} "
                    f"({alert}): it must be signed by a CA the server trusts and be valid now"
                )
        return error

    def _method(self, spec: RpcSpec) -> Callable[..., Any]:
        method: Callable[..., Any] = getattr(self._stub, spec.name)
        return method


def _delay_or_raise(plan: RetryPlan, error: OverlandError) -> float:
    delay = plan.retry_delay(error)
    if delay is None:
        raise plan.final_error(error) from None
    return delay


def _resume_or_raise(plan: RetryPlan, spec: RpcSpec, request: Any, error: OverlandError) -> tuple[Any, float]:
    """The request that continues a broken stream and how long to wait first, or raise."""
    resumed = spec.after_error(request, error)
    delay = plan.retry_delay(error, resumable=resumed is not None)
    if delay is None:
        raise plan.final_error(error) from None
    return (request if resumed is None else resumed), delay


class SyncTransport(_Transport[grpc.Channel]):
    """Blocking calls over a ``grpc.Channel``. Use as a context manager, or call ``close()``."""

    def _connect(
        self, channel: grpc.Channel | None, endpoint: Endpoint, interceptors: Sequence[Any]
    ) -> grpc.Channel:
        opened = channel if channel is not None else endpoint.channel()
        return grpc.intercept_channel(opened, *interceptors) if interceptors else opened

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def unary(self, spec: RpcSpec, request: Any) -> Any:
        plan = self._plan(spec)
        while True:
            try:
                return self._method(spec)(request, timeout=plan.remaining())
            except grpc.RpcError as rpc_error:
                time.sleep(_delay_or_raise(plan, self._failure(rpc_error)))

    def pages(self, spec: RpcSpec, request: Message | None) -> Generator[Any, None, None]:
        while request is not None:
            response = self.unary(spec, request)
            yield from spec.items_of(response)
            request = spec.next_page(request, response)

    def stream(self, spec: RpcSpec, request: Any) -> Generator[Any, None, None]:
        plan = self._plan(spec)
        while True:
            call = self._method(spec)(request, timeout=plan.remaining())
            try:
                for response in call:
                    plan.succeeded()
                    request = spec.after(request, response)
                    yield from spec.items_of(response)
                return
            except grpc.RpcError as rpc_error:
                if request is None:
                    raise self._failure(rpc_error) from None
                request, delay = _resume_or_raise(plan, spec, request, self._failure(rpc_error))
                time.sleep(delay)
            finally:
                call.cancel()


class AioTransport(_Transport[grpc.aio.Channel]):
    """asyncio calls over a ``grpc.aio.Channel``. Use as an async context manager, or ``await close()``."""

    def _connect(
        self, channel: grpc.aio.Channel | None, endpoint: Endpoint, interceptors: Sequence[Any]
    ) -> grpc.aio.Channel:
        if channel is None:
            return endpoint.aio_channel(interceptors)
        if interceptors:
            raise ConfigurationError("an asyncio channel takes its interceptors when it is created")
        return channel

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def unary(self, spec: RpcSpec, request: Any) -> Any:
        plan = self._plan(spec)
        while True:
            try:
                return await self._method(spec)(request, timeout=plan.remaining())
            except grpc.RpcError as rpc_error:
                error = await asyncio.to_thread(self._failure, rpc_error)
                await asyncio.sleep(_delay_or_raise(plan, error))

    async def pages(self, spec: RpcSpec, request: Message | None) -> AsyncGenerator[Any, None]:
        while request is not None:
            response = await self.unary(spec, request)
            for item in spec.items_of(response):
                yield item
            request = spec.next_page(request, response)

    async def stream(self, spec: RpcSpec, request: Any) -> AsyncGenerator[Any, None]:
        plan = self._plan(spec)
        while True:
            call = self._method(spec)(request, timeout=plan.remaining())
            try:
                async for response in call:
                    plan.succeeded()
                    request = spec.after(request, response)
                    for item in spec.items_of(response):
                        yield item
                return
            except grpc.RpcError as rpc_error:
                error = await asyncio.to_thread(self._failure, rpc_error)
                if request is None:
                    raise error from None
                request, delay = _resume_or_raise(plan, spec, request, error)
                await asyncio.sleep(delay)
            finally:
                call.cancel()
