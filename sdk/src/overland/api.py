"""The four APIs as declarations: one line per RPC, shared by the sync and the asyncio clients.

Method arguments are the generated messages' fields as keywords, e.g.
``create_lookup_record(ca=..., vsid=..., mac=..., pa=..., vm_name=...)`` or
``update_lookup_record(lookup_record=record, expected_revision=record.revision)``.
Idempotent calls (get, list, watch start, select, status) are retried on UNAVAILABLE; the rest never are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import ParamSpec, TypeVar

from overland._transport import ApiBase, RpcSpec, Streaming, Unary
from overland.config import Service
from overland.errors import ConfigurationError
from overland.v1 import (
    policy_pb2,
    policy_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
    types_pb2,
    vswitch_pb2,
    vswitch_pb2_grpc,
)

P = ParamSpec("P")
M = TypeVar("M")
R = TypeVar("R")

DEFAULT_BULK_CHUNK = 1000


def wrapping(make: Callable[P, M], wrap: Callable[[M], R]) -> Callable[P, R]:
    """A request builder taking a resource's fields as keywords (create calls take flat arguments)."""

    def build(*args: P.args, **kwargs: P.kwargs) -> R:
        return wrap(make(*args, **kwargs))

    return build


def bulk_requests(
    records: Iterable[types_pb2.LookupRecord],
    *,
    chunk: int = DEFAULT_BULK_CHUNK,
    deletes: Iterable[types_pb2.LookupRecord] = (),
) -> Iterator[policy_pb2.BulkApplyLookupRecordsRequest]:
    """The stream of a bulk apply: upserts in messages of ``chunk`` records, then the deletes.

    Lazy, so that a load of millions of records never sits in memory as one list. Arguments are checked
    here, eagerly: an error raised inside the stream would only reach the caller as a cancelled call.
    """
    if not 1 <= chunk <= 100_000:
        raise ConfigurationError(f"chunk must be within 1..100000, got {chunk}")
    return _chunks(iter(records), iter(deletes), chunk)


def _chunks(
    upserts: Iterator[types_pb2.LookupRecord], deletes: Iterator[types_pb2.LookupRecord], chunk: int
) -> Iterator[policy_pb2.BulkApplyLookupRecordsRequest]:
    for field, source in (("upserts", upserts), ("deletes", deletes)):
        while batch := list(islice(source, chunk)):
            yield policy_pb2.BulkApplyLookupRecordsRequest(**{field: batch})


def delta_messages(messages: Iterable[replica_pb2.DeltaMessage]) -> Iterable[replica_pb2.DeltaMessage]:
    """The stream of one delta: a header, chunks, then end_of_delta."""
    return messages


def _resume_watch(
    request: policy_pb2.WatchTableRequest, response: policy_pb2.WatchTableResponse
) -> policy_pb2.WatchTableRequest:
    # start_revision is exclusive, so resuming from the last delivered revision misses and repeats nothing.
    return policy_pb2.WatchTableRequest(
        start_revision=max(request.start_revision, response.revision), rdids=request.rdids
    )


def _get(name: str, items: str = "") -> RpcSpec:
    return RpcSpec(name, idempotent=True, items=items)


def _change(name: str) -> RpcSpec:
    return RpcSpec(name)


class PolicyApi(ApiBase):
    """PolicyService: the routing table (HNV ``*-NetVirtualization*`` cmdlets)."""

    service = Service.POLICY
    stub_class = policy_pb2_grpc.PolicyServiceStub

    create_routing_domain = Unary(
        _change("CreateRoutingDomain"),
        wrapping(types_pb2.RoutingDomain, lambda m: policy_pb2.CreateRoutingDomainRequest(routing_domain=m)),
        types_pb2.RoutingDomain,
    )
    get_routing_domain = Unary(
        _get("GetRoutingDomain"), policy_pb2.GetRoutingDomainRequest, types_pb2.RoutingDomain
    )
    update_routing_domain = Unary(
        _change("UpdateRoutingDomain"), policy_pb2.UpdateRoutingDomainRequest, types_pb2.RoutingDomain
    )
    delete_routing_domain = Unary(
        _change("DeleteRoutingDomain"), policy_pb2.DeleteRoutingDomainRequest, policy_pb2.DeleteResponse
    )
    list_routing_domains = Streaming(
        _get("ListRoutingDomains", "routing_domains"),
        policy_pb2.ListRoutingDomainsRequest,
        types_pb2.RoutingDomain,
    )

    create_virtual_subnet = Unary(
        _change("CreateVirtualSubnet"),
        wrapping(types_pb2.VirtualSubnet, lambda m: policy_pb2.CreateVirtualSubnetRequest(virtual_subnet=m)),
        types_pb2.VirtualSubnet,
    )
    get_virtual_subnet = Unary(
        _get("GetVirtualSubnet"), policy_pb2.GetVirtualSubnetRequest, types_pb2.VirtualSubnet
    )
    update_virtual_subnet = Unary(
        _change("UpdateVirtualSubnet"), policy_pb2.UpdateVirtualSubnetRequest, types_pb2.VirtualSubnet
    )
    delete_virtual_subnet = Unary(
        _change("DeleteVirtualSubnet"), policy_pb2.DeleteVirtualSubnetRequest, policy_pb2.DeleteResponse
    )
    list_virtual_subnets = Streaming(
        _get("ListVirtualSubnets", "virtual_subnets"),
        policy_pb2.ListVirtualSubnetsRequest,
        types_pb2.VirtualSubnet,
    )

    create_provider_address = Unary(
        _change("CreateProviderAddress"),
        wrapping(
            types_pb2.ProviderAddress, lambda m: policy_pb2.CreateProviderAddressRequest(provider_address=m)
        ),
        types_pb2.ProviderAddress,
    )
    get_provider_address = Unary(
        _get("GetProviderAddress"), policy_pb2.GetProviderAddressRequest, types_pb2.ProviderAddress
    )
    update_provider_address = Unary(
        _change("UpdateProviderAddress"), policy_pb2.UpdateProviderAddressRequest, types_pb2.ProviderAddress
    )
    delete_provider_address = Unary(
        _change("DeleteProviderAddress"), policy_pb2.DeleteProviderAddressRequest, policy_pb2.DeleteResponse
    )
    list_provider_addresses = Streaming(
        _get("ListProviderAddresses", "provider_addresses"),
        policy_pb2.ListProviderAddressesRequest,
        types_pb2.ProviderAddress,
    )

    create_lookup_record = Unary(
        _change("CreateLookupRecord"),
        wrapping(types_pb2.LookupRecord, lambda m: policy_pb2.CreateLookupRecordRequest(lookup_record=m)),
        types_pb2.LookupRecord,
    )
    get_lookup_record = Unary(
        _get("GetLookupRecord"), policy_pb2.GetLookupRecordRequest, types_pb2.LookupRecord
    )
    update_lookup_record = Unary(
        _change("UpdateLookupRecord"), policy_pb2.UpdateLookupRecordRequest, types_pb2.LookupRecord
    )
    delete_lookup_record = Unary(
        _change("DeleteLookupRecord"), policy_pb2.DeleteLookupRecordRequest, policy_pb2.DeleteResponse
    )
    list_lookup_records = Streaming(
        _get("ListLookupRecords", "lookup_records"),
        policy_pb2.ListLookupRecordsRequest,
        types_pb2.LookupRecord,
    )

    create_customer_route = Unary(
        _change("CreateCustomerRoute"),
        wrapping(types_pb2.CustomerRoute, lambda m: policy_pb2.CreateCustomerRouteRequest(customer_route=m)),
        types_pb2.CustomerRoute,
    )
    get_customer_route = Unary(
        _get("GetCustomerRoute"), policy_pb2.GetCustomerRouteRequest, types_pb2.CustomerRoute
    )
    update_customer_route = Unary(
        _change("UpdateCustomerRoute"), policy_pb2.UpdateCustomerRouteRequest, types_pb2.CustomerRoute
    )
    delete_customer_route = Unary(
        _change("DeleteCustomerRoute"), policy_pb2.DeleteCustomerRouteRequest, policy_pb2.DeleteResponse
    )
    list_customer_routes = Streaming(
        _get("ListCustomerRoutes", "customer_routes"),
        policy_pb2.ListCustomerRoutesRequest,
        types_pb2.CustomerRoute,
    )

    # Not retried: a broken stream may have committed some transactions; the response says how many.
    bulk_apply = Unary(
        _change("BulkApplyLookupRecords"), bulk_requests, policy_pb2.BulkApplyLookupRecordsResponse
    )
    watch_table = Streaming(
        RpcSpec("WatchTable", idempotent=True, resume=_resume_watch, long_lived=True),
        policy_pb2.WatchTableRequest,
        policy_pb2.WatchTableResponse,
    )
    select_next_hop = Unary(
        _get("SelectNextHop"), policy_pb2.SelectNextHopRequest, policy_pb2.SelectNextHopResponse
    )
    get_table_status = Unary(
        _get("GetTableStatus"), policy_pb2.GetTableStatusRequest, policy_pb2.GetTableStatusResponse
    )


class VswitchApi(ApiBase):
    """VswitchService: one host's agent (its table copy, VM ports, counters, extension chain)."""

    service = Service.VSWITCH
    stub_class = vswitch_pb2_grpc.VswitchServiceStub

    get_agent_status = Unary(
        _get("GetAgentStatus"), vswitch_pb2.GetAgentStatusRequest, vswitch_pb2.AgentStatus
    )
    dump_table = Unary(_get("DumpTable"), vswitch_pb2.DumpTableRequest, vswitch_pb2.DumpTableResponse)
    attach_port = Unary(
        _change("AttachPort"),
        wrapping(vswitch_pb2.Port, lambda m: vswitch_pb2.AttachPortRequest(port=m)),
        vswitch_pb2.Port,
    )
    detach_port = Unary(_change("DetachPort"), vswitch_pb2.DetachPortRequest, vswitch_pb2.DetachPortResponse)
    list_ports = Streaming(_get("ListPorts", "ports"), vswitch_pb2.ListPortsRequest, vswitch_pb2.Port)
    get_counters = Unary(_get("GetCounters"), vswitch_pb2.GetCountersRequest, vswitch_pb2.Counters)
    list_extensions = Streaming(
        _get("ListExtensions", "extensions"), vswitch_pb2.ListExtensionsRequest, vswitch_pb2.Extension
    )
    configure_extension = Unary(
        _change("ConfigureExtension"),
        wrapping(vswitch_pb2.Extension, lambda m: vswitch_pb2.ConfigureExtensionRequest(extension=m)),
        vswitch_pb2.Extension,
    )


class ReplicaApi(ApiBase):
    """ReplicaService at the primary site: enable, watch and steer replication of VMs."""

    service = Service.REPLICA
    stub_class = replica_pb2_grpc.ReplicaServiceStub

    enable_replication = Unary(
        _change("EnableReplication"), replica_pb2.EnableReplicationRequest, replica_pb2.Replication
    )
    get_replication = Unary(
        _get("GetReplication"), replica_pb2.GetReplicationRequest, replica_pb2.Replication
    )
    list_replications = Streaming(
        _get("ListReplications", "replications"), replica_pb2.ListReplicationsRequest, replica_pb2.Replication
    )
    pause_replication = Unary(
        _change("PauseReplication"), replica_pb2.PauseReplicationRequest, replica_pb2.Replication
    )
    resume_replication = Unary(
        _change("ResumeReplication"), replica_pb2.ResumeReplicationRequest, replica_pb2.Replication
    )
    resync_replication = Unary(
        _change("ResyncReplication"), replica_pb2.ResyncReplicationRequest, replica_pb2.Replication
    )
    disable_replication = Unary(
        _change("DisableReplication"), replica_pb2.DisableReplicationRequest, replica_pb2.Replication
    )
    replicate_now = Unary(_change("ReplicateNow"), replica_pb2.ReplicateNowRequest, replica_pb2.Replication)
    list_recovery_points = Streaming(
        _get("ListRecoveryPoints", "recovery_points"),
        replica_pb2.ListRecoveryPointsRequest,
        replica_pb2.RecoveryPoint,
    )


class ReplicaReceiverApi(ApiBase):
    """ReplicaReceiverService at the DR site: delta intake, its state, block digests, recovery points."""

    service = Service.REPLICA
    stub_class = replica_pb2_grpc.ReplicaReceiverServiceStub

    send_delta = Unary(_change("SendDelta"), delta_messages, replica_pb2.DeltaAck)
    get_receiver_state = Unary(
        _get("GetReceiverState"), replica_pb2.GetReceiverStateRequest, replica_pb2.ReceiverState
    )
    # Retried only until the first digests arrive: a restart mid-way would repeat blocks.
    get_block_hashes = Streaming(
        _get("GetBlockHashes"), replica_pb2.BlockHashesRequest, replica_pb2.BlockHashes
    )
    list_recovery_points = ReplicaApi.list_recovery_points
