"""The asyncio clients against a real gRPC server: awaitable calls, async paging, retries, errors, watch."""

from __future__ import annotations

import asyncio

import grpc
import pytest

import overland.aio
from overland import AlreadyExistsError, InvalidArgumentError, UnavailableError
from overland.v1 import types_pb2
from tests.unit.sdk.conftest import FAST_RETRY, Running


async def _seeded(client: overland.aio.PolicyClient) -> str:
    domain = await client.create_routing_domain(tenant_name="contoso")
    await client.create_virtual_subnet(vsid=5001, rdid=domain.rdid, ca_prefixes=["192.0.2.0/24"])
    await client.create_provider_address(host_name="host-a", pa_ip="198.18.0.1", prefix_length=16)
    return domain.rdid


def test_async_calls_and_paging(policy_server: Running) -> None:
    async def scenario() -> list[str]:
        async with overland.aio.PolicyClient(config=policy_server.config()) as client:
            await _seeded(client)
            for index in range(1, 8):
                await client.create_lookup_record(
                    ca=f"192.0.2.{index}", vsid=5001, mac=f"00:15:5d:00:00:{index:02x}", pa="198.18.0.1"
                )
            pages = client.list_lookup_records(vsid=5001, page=types_pb2.PageRequest(page_size=3))
            return [record.ca async for record in pages]

    cas = asyncio.run(scenario())
    assert sorted(cas) == sorted(f"192.0.2.{i}" for i in range(1, 8))
    assert policy_server.fake.calls["ListLookupRecords"] == 3


def test_async_errors_carry_field_violations(policy_server: Running) -> None:
    async def scenario() -> None:
        async with overland.aio.PolicyClient(config=policy_server.config()) as client:
            await _seeded(client)
            await client.create_lookup_record(
                ca="192.0.2.1", vsid=5001, mac="00:15:5d:00:00:01", pa="198.18.0.1"
            )
            with pytest.raises(AlreadyExistsError) as duplicate:
                await client.create_lookup_record(
                    ca="192.0.2.1", vsid=5001, mac="00:15:5d:00:00:01", pa="198.18.0.1"
                )
            assert duplicate.value.field_violations[0].field == "lookup_record.ca"
            with pytest.raises(InvalidArgumentError) as invalid:
                await client.create_lookup_record(ca="x", vsid=5001, mac="00:15:5d:00:00:02", pa="198.18.0.1")
            assert [v.field for v in invalid.value.field_violations] == ["lookup_record.ca"]

    asyncio.run(scenario())


def test_async_retry_only_for_idempotent_calls(policy_server: Running) -> None:
    fake = policy_server.fake

    async def scenario() -> None:
        async with overland.aio.PolicyClient(config=policy_server.config()) as client:
            fake.faults["GetTableStatus"] = [grpc.StatusCode.UNAVAILABLE] * 2
            assert (await client.get_table_status()).revision >= 1
            fake.faults["CreateRoutingDomain"] = [grpc.StatusCode.UNAVAILABLE]
            with pytest.raises(UnavailableError):
                await client.create_routing_domain(tenant_name="x")

    asyncio.run(scenario())
    assert fake.calls["GetTableStatus"] == 3
    assert fake.calls["CreateRoutingDomain"] == 1


def test_async_watch_resumes_after_a_break(policy_server: Running) -> None:
    policy_server.fake.watch_break_after = 1

    async def scenario() -> list[str]:
        async with overland.aio.PolicyClient(config=policy_server.config()) as client:
            start = (await client.get_table_status()).revision
            for tenant in ("a", "b", "c"):
                await client.create_routing_domain(tenant_name=tenant)
            tenants: list[str] = []
            async for response in client.watch_table(start_revision=start):
                tenants.extend(e.entry.routing_domain.tenant_name for e in response.events)
                if len(tenants) == 3:
                    break
            return tenants

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=20)) == ["a", "b", "c"]
    assert policy_server.fake.calls["WatchTable"] == 2


def test_async_retries_stop_at_max_attempts(policy_server: Running) -> None:
    policy_server.fake.faults["GetRoutingDomain"] = [grpc.StatusCode.UNAVAILABLE] * 10

    async def scenario() -> None:
        async with overland.aio.PolicyClient(config=policy_server.config()) as client:
            with pytest.raises(UnavailableError):
                await client.get_routing_domain(rdid="x")

    asyncio.run(scenario())
    assert policy_server.fake.calls["GetRoutingDomain"] == FAST_RETRY.max_attempts


def test_async_bulk_apply_streams_chunks(policy_server: Running) -> None:
    records = [
        types_pb2.LookupRecord(ca=f"192.0.2.{i}", vsid=5001, mac=f"00:15:5d:00:00:{i:02x}", pa="198.18.0.1")
        for i in range(1, 26)
    ]

    async def scenario() -> int:
        async with overland.aio.PolicyClient(config=policy_server.config()) as client:
            await _seeded(client)
            result = await client.bulk_apply(records, chunk=10)
            return int(result.applied)

    assert asyncio.run(scenario()) == 25
    assert policy_server.fake.bulk_messages == 3
