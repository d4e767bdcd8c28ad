"""Client interceptors (how tracing or auth headers plug in without the SDK depending on them) see
every call of the sync and the asyncio clients, and can add metadata the server receives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest

import overland.aio
from overland import ConfigurationError, PolicyClient
from tests.unit.sdk.conftest import Running

HEADER = ("x-overland-test", "42")


def _with_header(details: Any) -> Any:
    metadata = [*(details.metadata or ()), HEADER]
    return details._replace(metadata=metadata)


class SyncHeader(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        self.methods.append(details.method)
        return continuation(_with_header(details), request)


class AioHeader(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        method = details.method
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        return await continuation(_with_header(details), request)


def test_sync_interceptor_sees_calls_and_adds_metadata(policy_server: Running) -> None:
    interceptor = SyncHeader()
    with PolicyClient(config=policy_server.config(), interceptors=[interceptor]) as client:
        client.get_table_status()
        client.create_routing_domain(tenant_name="traced")
    assert interceptor.methods == [
        "/overland.v1.PolicyService/GetTableStatus",
        "/overland.v1.PolicyService/CreateRoutingDomain",
    ]
    assert policy_server.fake.metadata["GetTableStatus"][HEADER[0]] == HEADER[1]


def test_aio_interceptor_sees_calls_and_adds_metadata(policy_server: Running) -> None:
    interceptor = AioHeader()

    async def scenario() -> None:
        async with overland.aio.PolicyClient(
            config=policy_server.config(), interceptors=[interceptor]
        ) as client:
            await client.get_table_status()

    asyncio.run(scenario())
    assert interceptor.methods == ["/overland.v1.PolicyService/GetTableStatus"]
    assert policy_server.fake.metadata["GetTableStatus"][HEADER[0]] == HEADER[1]


def test_aio_interceptors_cannot_be_added_to_a_given_channel(policy_server: Running) -> None:
    async def scenario() -> None:
        channel = grpc.aio.insecure_channel(policy_server.address)
        try:
            with pytest.raises(ConfigurationError):
                overland.aio.PolicyClient(
                    config=policy_server.config(), channel=channel, interceptors=[AioHeader()]
                )
        finally:
            await channel.close(None)

    asyncio.run(scenario())
