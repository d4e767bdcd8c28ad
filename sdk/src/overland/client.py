"""The blocking clients: ``PolicyClient``, ``VswitchClient``, ``ReplicaClient``, ``ReplicaReceiverClient``,
``VmClient``.

    with PolicyClient("127.0.0.1:50051") as policy:
        policy.create_lookup_record(ca="192.0.2.10", vsid=5001, mac="00:15:5d:00:00:01", pa="198.18.0.1")
        for record in policy.list_lookup_records(vsid=5001):
            ...

Without arguments a client reads its endpoint, TLS and timeout from the ``OVERLAND_*`` environment.
"""

from __future__ import annotations

from overland._transport import SyncTransport
from overland.api import PolicyApi, ReplicaApi, ReplicaReceiverApi, VmApi, VswitchApi


class PolicyClient(PolicyApi, SyncTransport):
    """The policy service: routing domains, subnets, provider addresses, lookup records, routes."""


class VswitchClient(VswitchApi, SyncTransport):
    """One host's vswitch agent."""


class ReplicaClient(ReplicaApi, SyncTransport):
    """A site's replications (the VMs it is the primary of)."""


class ReplicaReceiverClient(ReplicaReceiverApi, SyncTransport):
    """A site's receiver (the replicas it keeps)."""


class VmClient(VmApi, SyncTransport):
    """A site's VMs."""
