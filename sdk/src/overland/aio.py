"""The asyncio clients, with the same methods as the blocking ones, awaitable or async-iterable.

async with overland.aio.PolicyClient("127.0.0.1:50051") as policy:
    domain = await policy.get_routing_domain(rdid=rdid)
    async for record in policy.list_lookup_records(rdid=rdid):
        ...
"""

from __future__ import annotations

from overland._transport import AioTransport
from overland.api import PolicyApi, ReplicaApi, ReplicaReceiverApi, VmApi, VswitchApi


class PolicyClient(PolicyApi, AioTransport):
    """The policy service, for asyncio."""


class VswitchClient(VswitchApi, AioTransport):
    """One host's vswitch agent, for asyncio."""


class ReplicaClient(ReplicaApi, AioTransport):
    """A site's replications, for asyncio."""


class ReplicaReceiverClient(ReplicaReceiverApi, AioTransport):
    """A site's receiver, for asyncio."""


class VmClient(VmApi, AioTransport):
    """A site's VMs, for asyncio."""


__all__ = ["PolicyClient", "ReplicaClient", "ReplicaReceiverClient", "VmClient", "VswitchClient"]
