"""The five APIs as declarations, shared by the sync and the asyncio clients.

Method arguments are the generated messages' fields as keywords, e.g.
``create_lookup_record(ca=..., vsid=..., mac=..., pa=..., vm_name=...)`` or
``update_lookup_record(lookup_record=record, expected_revision=record.revision)``.
Idempotent calls (get, list, watch start, select, status) are retried on UNAVAILABLE; the rest never are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, ParamSpec, TypeVar

from overland._transport import ApiBase, RpcSpec, Streaming, Unary
from overland.config import Service
from overland.defaults import ERROR_DOMAIN, RESUME_REVISION, WATCH_BACKLOG_EXCEEDED
from overland.errors import ConfigurationError, OverlandError
from overland.v1 import (
    policy_pb2,
    policy_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
    types_pb2,
    vm_pb2,
    vm_pb2_grpc,
    vswitch_pb2,
    vswitch_pb2_grpc,
)

P = ParamSpec("P")
PC = ParamSpec("PC")
PG = ParamSpec("PG")
PU = ParamSpec("PU")
PD = ParamSpec("PD")
PL = ParamSpec("PL")
M = TypeVar("M")
R = TypeVar("R")
T = TypeVar("T")

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
    create_only: bool = False,
) -> Iterator[policy_pb2.BulkApplyLookupRecordsRequest]:
    """The stream of a bulk apply: upserts in messages of ``chunk`` records, then the deletes. With
    ``create_only`` the upserts only create: an existing record fails the load (ALREADY_EXISTS).

    Lazy, so that a load of millions of records never sits in memory as one list. Arguments are checked
    here, eagerly: an error raised inside the stream would only reach the caller as a cancelled call.
    """
    if not 1 <= chunk <= 100_000:
        raise ConfigurationError(f"chunk must be within 1..100000, got {chunk}")
    return _chunks(iter(records), iter(deletes), chunk, create_only)


def _chunks(
    upserts: Iterator[types_pb2.LookupRecord],
    deletes: Iterator[types_pb2.LookupRecord],
    chunk: int,
    create_only: bool,
) -> Iterator[policy_pb2.BulkApplyLookupRecordsRequest]:
    while batch := list(islice(upserts, chunk)):
        yield policy_pb2.BulkApplyLookupRecordsRequest(upserts=batch, create_only=create_only)
    while batch := list(islice(deletes, chunk)):
        yield policy_pb2.BulkApplyLookupRecordsRequest(deletes=batch)


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


def _resume_cycle(
    request: replica_pb2.WatchCycleRequest, response: replica_pb2.Cycle
) -> replica_pb2.WatchCycleRequest:
    # A watch of "the latest cycle" (id 0) goes on with the cycle it found.
    return replica_pb2.WatchCycleRequest(vm_name=request.vm_name, id=response.id)


def _resume_watch_after(
    request: policy_pb2.WatchTableRequest, error: OverlandError
) -> policy_pb2.WatchTableRequest | None:
    # The server ended a watch that fell behind, with the revision it delivered every change up to:
    # the client may have seen none of them yet (a watch from 0, "now"), so the server's word counts.
    if (error.domain, error.reason) != (ERROR_DOMAIN, WATCH_BACKLOG_EXCEEDED):
        return None
    if not error.metadata.get(RESUME_REVISION, "").isdigit():
        return None
    revision = int(error.metadata[RESUME_REVISION])
    return policy_pb2.WatchTableRequest(
        start_revision=max(request.start_revision, revision), rdids=request.rdids
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _rpc_name(request_class: Any) -> str:
    """``GetRoutingDomainRequest`` -> ``GetRoutingDomain``: requests are named after their RPC."""
    return str(request_class.DESCRIPTOR.name).removesuffix("Request")


def _call(request_class: Callable[P, Any], returns: type[T], *, idempotent: bool = False) -> Unary[P, T]:
    """A unary RPC whose method takes the request message's fields as keywords."""
    return Unary(RpcSpec(_rpc_name(request_class), idempotent=idempotent), request_class, returns)


def _listing(request_class: Callable[P, Any], items: str, yields: type[T]) -> Streaming[P, T]:
    """A list RPC: the method yields the ``items`` of every page."""
    spec = RpcSpec(_rpc_name(request_class), idempotent=True, items=items)
    return Streaming(spec, request_class, yields)


def _crud(
    resource: Callable[PC, M],
    *,
    create: Callable[..., Any],
    get: Callable[PG, Any],
    update: Callable[PU, Any],
    delete: Callable[PD, Any],
    listing: Callable[PL, Any],
) -> tuple[Unary[PC, M], Unary[PG, M], Unary[PU, M], Unary[PD, policy_pb2.DeleteResponse], Streaming[PL, M]]:
    """Create, get, update, delete and list of one policy resource.

    Create takes the resource's fields as keywords; list yields resources from every page.
    """
    resource_type: Any = resource
    field = _snake(resource_type.DESCRIPTOR.name)
    items = _snake(_rpc_name(listing).removeprefix("List"))
    creating = wrapping(resource, lambda message: create(**{field: message}))
    return (
        Unary(RpcSpec(_rpc_name(create)), creating, resource_type),
        _call(get, resource_type, idempotent=True),
        _call(update, resource_type),
        _call(delete, policy_pb2.DeleteResponse),
        _listing(listing, items, resource_type),
    )


class PolicyApi(ApiBase):
    """PolicyService: the routing table (HNV ``*-NetVirtualization*`` cmdlets)."""

    service = Service.POLICY
    stub_class = policy_pb2_grpc.PolicyServiceStub

    (
        create_routing_domain,
        get_routing_domain,
        update_routing_domain,
        delete_routing_domain,
        list_routing_domains,
    ) = _crud(
        types_pb2.RoutingDomain,
        create=policy_pb2.CreateRoutingDomainRequest,
        get=policy_pb2.GetRoutingDomainRequest,
        update=policy_pb2.UpdateRoutingDomainRequest,
        delete=policy_pb2.DeleteRoutingDomainRequest,
        listing=policy_pb2.ListRoutingDomainsRequest,
    )
    (
        create_virtual_subnet,
        get_virtual_subnet,
        update_virtual_subnet,
        delete_virtual_subnet,
        list_virtual_subnets,
    ) = _crud(
        types_pb2.VirtualSubnet,
        create=policy_pb2.CreateVirtualSubnetRequest,
        get=policy_pb2.GetVirtualSubnetRequest,
        update=policy_pb2.UpdateVirtualSubnetRequest,
        delete=policy_pb2.DeleteVirtualSubnetRequest,
        listing=policy_pb2.ListVirtualSubnetsRequest,
    )
    (
        create_provider_address,
        get_provider_address,
        update_provider_address,
        delete_provider_address,
        list_provider_addresses,
    ) = _crud(
        types_pb2.ProviderAddress,
        create=policy_pb2.CreateProviderAddressRequest,
        get=policy_pb2.GetProviderAddressRequest,
        update=policy_pb2.UpdateProviderAddressRequest,
        delete=policy_pb2.DeleteProviderAddressRequest,
        listing=policy_pb2.ListProviderAddressesRequest,
    )
    (
        create_lookup_record,
        get_lookup_record,
        update_lookup_record,
        delete_lookup_record,
        list_lookup_records,
    ) = _crud(
        types_pb2.LookupRecord,
        create=policy_pb2.CreateLookupRecordRequest,
        get=policy_pb2.GetLookupRecordRequest,
        update=policy_pb2.UpdateLookupRecordRequest,
        delete=policy_pb2.DeleteLookupRecordRequest,
        listing=policy_pb2.ListLookupRecordsRequest,
    )
    (
        create_customer_route,
        get_customer_route,
        update_customer_route,
        delete_customer_route,
        list_customer_routes,
    ) = _crud(
        types_pb2.CustomerRoute,
        create=policy_pb2.CreateCustomerRouteRequest,
        get=policy_pb2.GetCustomerRouteRequest,
        update=policy_pb2.UpdateCustomerRouteRequest,
        delete=policy_pb2.DeleteCustomerRouteRequest,
        listing=policy_pb2.ListCustomerRoutesRequest,
    )

    # Not retried: a move that committed but whose answer was lost would find its records gone from
    # their old CA. ``moves`` takes RecordMove messages (or dicts of their fields).
    move_lookup_records = _call(policy_pb2.MoveLookupRecordsRequest, policy_pb2.MoveLookupRecordsResponse)
    get_host = _call(policy_pb2.GetHostRequest, types_pb2.Host, idempotent=True)
    list_hosts = _listing(policy_pb2.ListHostsRequest, "hosts", types_pb2.Host)

    # Not retried: a broken stream may have committed some transactions; the response says how many.
    bulk_apply = Unary(
        RpcSpec("BulkApplyLookupRecords"), bulk_requests, policy_pb2.BulkApplyLookupRecordsResponse
    )
    watch_table = Streaming(
        RpcSpec(
            "WatchTable",
            idempotent=True,
            resume=_resume_watch,
            resume_after_error=_resume_watch_after,
            long_lived=True,
        ),
        policy_pb2.WatchTableRequest,
        policy_pb2.WatchTableResponse,
    )
    select_next_hop = _call(
        policy_pb2.SelectNextHopRequest, policy_pb2.SelectNextHopResponse, idempotent=True
    )
    # Not retried: a quarantine moves keys (a retry would find them moved, which is harmless, but a
    # check is an operator's explicit act).
    check_table = _call(policy_pb2.CheckTableRequest, policy_pb2.CheckTableResponse)
    get_table_status = _call(
        policy_pb2.GetTableStatusRequest, policy_pb2.GetTableStatusResponse, idempotent=True
    )


class VswitchApi(ApiBase):
    """VswitchService: one host's agent (its table copy, VM ports, counters, extension chain)."""

    service = Service.VSWITCH
    stub_class = vswitch_pb2_grpc.VswitchServiceStub

    get_agent_status = _call(vswitch_pb2.GetAgentStatusRequest, vswitch_pb2.AgentStatus, idempotent=True)
    dump_table = _call(vswitch_pb2.DumpTableRequest, vswitch_pb2.DumpTableResponse, idempotent=True)
    attach_port = Unary(
        RpcSpec("AttachPort"),
        wrapping(vswitch_pb2.Port, lambda m: vswitch_pb2.AttachPortRequest(port=m)),
        vswitch_pb2.Port,
    )
    detach_port = _call(vswitch_pb2.DetachPortRequest, vswitch_pb2.DetachPortResponse)
    list_ports = _listing(vswitch_pb2.ListPortsRequest, "ports", vswitch_pb2.Port)
    get_counters = _call(vswitch_pb2.GetCountersRequest, vswitch_pb2.Counters, idempotent=True)
    list_extensions = _listing(vswitch_pb2.ListExtensionsRequest, "extensions", vswitch_pb2.Extension)
    configure_extension = Unary(
        RpcSpec("ConfigureExtension"),
        wrapping(vswitch_pb2.Extension, lambda m: vswitch_pb2.ConfigureExtensionRequest(extension=m)),
        vswitch_pb2.Extension,
    )


class ReplicaApi(ApiBase):
    """ReplicaService at a site: enable, watch and steer replication of the VMs it is the primary of."""

    service = Service.REPLICA
    stub_class = replica_pb2_grpc.ReplicaServiceStub

    enable_replication = _call(replica_pb2.EnableReplicationRequest, replica_pb2.Replication)
    get_replication = _call(replica_pb2.GetReplicationRequest, replica_pb2.Replication, idempotent=True)
    list_replications = _listing(replica_pb2.ListReplicationsRequest, "replications", replica_pb2.Replication)
    pause_replication = _call(replica_pb2.PauseReplicationRequest, replica_pb2.Replication)
    resume_replication = _call(replica_pb2.ResumeReplicationRequest, replica_pb2.Replication)
    resync_replication = _call(replica_pb2.ResyncReplicationRequest, replica_pb2.Replication)
    disable_replication = _call(replica_pb2.DisableReplicationRequest, replica_pb2.Replication)
    # Returns the queued cycle at once; ``watch_cycle`` follows it (``overland.replication.wait_cycle``).
    replicate_now = _call(replica_pb2.ReplicateNowRequest, replica_pb2.Cycle)
    # No deadline (a transfer takes what it takes): it ends when the cycle does, and resumes after a
    # broken stream, from the same cycle.
    watch_cycle = Streaming(
        RpcSpec("WatchCycle", idempotent=True, resume=_resume_cycle, long_lived=True),
        replica_pb2.WatchCycleRequest,
        replica_pb2.Cycle,
    )
    list_recovery_points = _listing(
        replica_pb2.ListRecoveryPointsRequest, "recovery_points", replica_pb2.RecoveryPoint
    )
    # ``fields`` names the settings that change; a move to another replica server stops the running
    # cycle first (quickly: at its next chunk).
    set_replication = _call(replica_pb2.SetReplicationRequest, replica_pb2.Replication)
    # Each network check has its own deadline at the site (5 s): well within the call's.
    test_replication_connection = _call(
        replica_pb2.TestReplicationConnectionRequest, replica_pb2.ConnectionTest, idempotent=True
    )
    # Failover (Start-, Stop-, Complete-VMFailover, Set-VMReplication -Reverse); never retried: a
    # failover whose answer was lost may have happened (get_vm_failover says).
    start_vm_failover = _call(replica_pb2.StartVmFailoverRequest, replica_pb2.VmFailover)
    stop_vm_failover = _call(replica_pb2.StopVmFailoverRequest, replica_pb2.VmFailover)
    complete_vm_failover = _call(replica_pb2.CompleteVmFailoverRequest, replica_pb2.VmFailover)
    set_vm_replication = _call(replica_pb2.SetVmReplicationRequest, replica_pb2.VmFailover)
    get_vm_failover = _call(replica_pb2.GetVmFailoverRequest, replica_pb2.VmFailover, idempotent=True)
    list_vm_failover_history = _listing(
        replica_pb2.ListVmFailoverHistoryRequest, "events", replica_pb2.FailoverEvent
    )


class ReplicaReceiverApi(ApiBase):
    """ReplicaReceiverService at the DR site: delta intake, its state, block digests, recovery points."""

    service = Service.REPLICA
    stub_class = replica_pb2_grpc.ReplicaReceiverServiceStub

    send_delta = Unary(RpcSpec("SendDelta"), delta_messages, replica_pb2.DeltaAck)
    get_receiver_state = _call(
        replica_pb2.GetReceiverStateRequest, replica_pb2.ReceiverState, idempotent=True
    )
    # Retried only until the first digests arrive: a restart mid-way would repeat blocks.
    get_block_hashes = Streaming(
        RpcSpec("GetBlockHashes", idempotent=True), replica_pb2.BlockHashesRequest, replica_pb2.BlockHashes
    )
    list_recovery_points = ReplicaApi.list_recovery_points
    check_replica_server = _call(
        replica_pb2.CheckReplicaServerRequest, replica_pb2.ReplicaServerCheck, idempotent=True
    )
    # For the DR site's administrator. An import and an export take as long as the file does: no
    # deadline (a dead site is noticed by the channel's keepalive), and neither is retried.
    import_initial_replica = Unary(
        RpcSpec("ImportInitialReplica", long_lived=True),
        replica_pb2.ImportInitialReplicaRequest,
        replica_pb2.DeltaAck,
    )
    export_recovery_point = Streaming(
        RpcSpec("ExportRecoveryPoint", long_lived=True),
        replica_pb2.ExportRecoveryPointRequest,
        replica_pb2.RecoveryPointData,
    )
    adopt_replica = _call(replica_pb2.AdoptReplicaRequest, replica_pb2.AdoptReplicaResponse)


class VmApi(ApiBase):
    """VmService at a site (its replica service's endpoint): its VMs on qemu, after New-VM, Start-VM,
    Stop-VM, Get-VM and Remove-VM. ``create_vm`` takes ``VirtualMachine``'s fields as keywords.

    A graceful ``stop_vm`` waits for the guest to shut down (up to ``timeout_seconds``, 120 by
    default): call it on ``client.with_options(timeout=...)`` with a deadline above that.
    """

    service = Service.REPLICA
    stub_class = vm_pb2_grpc.VmServiceStub

    create_vm = Unary(
        RpcSpec("CreateVm"),
        wrapping(replica_pb2.VirtualMachine, lambda m: vm_pb2.CreateVmRequest(vm=m)),
        vm_pb2.Vm,
    )
    start_vm = _call(vm_pb2.StartVmRequest, vm_pb2.Vm)
    stop_vm = _call(vm_pb2.StopVmRequest, vm_pb2.Vm)
    get_vm = _call(vm_pb2.GetVmRequest, vm_pb2.Vm, idempotent=True)
    list_vms = _listing(vm_pb2.ListVmsRequest, "vms", vm_pb2.Vm)
    delete_vm = _call(vm_pb2.DeleteVmRequest, vm_pb2.Vm)
    get_console_log = _call(vm_pb2.GetConsoleLogRequest, vm_pb2.ConsoleLog, idempotent=True)
