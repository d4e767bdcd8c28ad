"""The gRPC PolicyService: a thin shell that turns requests into PolicyStore calls and back.

Errors are not handled here: the store raises ``ServiceError`` subclasses and the server's
ErrorMappingInterceptor turns them into status codes with field violations.
"""

# The RPC method names are gRPC's (CamelCase), not ours to choose.
# ruff: noqa: N802

from __future__ import annotations

from collections.abc import Iterator

import grpc

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.access import current_caller
from services.common.errors import FieldViolation
from services.common.kv import WatchBacklog
from services.common.routing import select_next_hop
from services.common.schema import decode_snapshot
from services.common.table import RoutingTable
from services.policy import validation
from services.policy.errors import InvalidPolicy, ResourceNotFound
from services.policy.record_planner import Mode, RecordChange
from services.policy.store import PolicyStore
from services.policy.tenancy import TenantFilter

# The gRPC service's full name (health, reflection); its OpenTelemetry name is overland.defaults.POLICY's.
GRPC_SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name


def bulk_changes(
    request: policy_pb2.BulkApplyLookupRecordsRequest, number: int, tenant: TenantFilter | None = None
) -> list[RecordChange]:
    """The validated changes of request message ``number`` of a bulk stream, upserts before
    deletes. A bad record anywhere in the message is INVALID_ARGUMENT naming every bad field (the
    first 50), and none of the message applies. A ``tenant``'s changes reach its own domains only."""
    changes: list[RecordChange] = []
    violations = validation.Violations()
    bad = 0
    # An enum member is slow to look up, and this runs per record.
    upsert = Mode.CREATE if request.create_only else Mode.UPSERT
    for index, record in enumerate(request.upserts):
        field = f"requests[{number}].upserts[{index}]"
        try:
            valid = validation.validate_lookup_record(record, field, in_place=True)
            domain = tenant.domain_of(valid.vsid) if tenant is not None else None
            changes.append(RecordChange(upsert, valid, field=field, domain=domain))
        except InvalidPolicy as error:
            bad += 1
            violations.items.extend(error.violations)
    for index, record in enumerate(request.deletes):
        field = f"requests[{number}].deletes[{index}]"
        try:
            vsid, ca = validation.validate_record_id(record.vsid, record.ca, field)
        except InvalidPolicy as error:
            bad += 1
            violations.items.extend(error.violations)
            continue
        domain = tenant.domain_of(vsid) if tenant is not None else None
        changes.append(
            RecordChange(
                Mode.DELETE_IF_PRESENT, types_pb2.LookupRecord(vsid=vsid, ca=ca), field=field, domain=domain
            )
        )
    if bad:
        shown = violations.shown()
        raise InvalidPolicy(
            f"bulk apply: request message {number} has {bad} invalid records, {len(violations.items)} bad "
            f"fields (the first {len(shown)} are listed); none of it or later messages was applied",
            shown,
        )
    return changes


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Every RPC of overland.v1.PolicyService over one PolicyStore."""

    def __init__(self, store: PolicyStore, *, watch_backlog: WatchBacklog | None = None) -> None:
        """``watch_backlog``: what a WatchTable stream holds for a client that does not keep up."""
        self.store = store
        self.watch_backlog = watch_backlog

    def _tenant(self) -> TenantFilter | None:
        """The running call's tenant filter: None when its caller is not limited to a tenant's own
        objects (services/policy/access.py grants, services/policy/tenancy.py filters)."""
        tenant = current_caller().tenant
        return TenantFilter(self.store.kv, tenant) if tenant is not None else None

    # -- routing domains

    def CreateRoutingDomain(
        self, request: policy_pb2.CreateRoutingDomainRequest, context: grpc.ServicerContext
    ) -> types_pb2.RoutingDomain:
        return self.store.create_routing_domain(request.routing_domain)

    def GetRoutingDomain(
        self, request: policy_pb2.GetRoutingDomainRequest, context: grpc.ServicerContext
    ) -> types_pb2.RoutingDomain:
        return self.store.get_routing_domain(request.rdid, tenant=self._tenant())

    def UpdateRoutingDomain(
        self, request: policy_pb2.UpdateRoutingDomainRequest, context: grpc.ServicerContext
    ) -> types_pb2.RoutingDomain:
        return self.store.update_routing_domain(
            request.routing_domain, request.expected_revision, tenant=self._tenant()
        )

    def DeleteRoutingDomain(
        self, request: policy_pb2.DeleteRoutingDomainRequest, context: grpc.ServicerContext
    ) -> policy_pb2.DeleteResponse:
        return policy_pb2.DeleteResponse(
            revision=self.store.delete_routing_domain(
                request.rdid, request.expected_revision, tenant=self._tenant()
            )
        )

    def ListRoutingDomains(
        self, request: policy_pb2.ListRoutingDomainsRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListRoutingDomainsResponse:
        page = self.store.list_routing_domains(request.page, tenant=self._tenant())
        return policy_pb2.ListRoutingDomainsResponse(
            routing_domains=page.items,
            next_page_token=page.next_page_token,
            revision=page.revision,
            unreadable=page.unreadable,
        )

    # -- virtual subnets

    def CreateVirtualSubnet(
        self, request: policy_pb2.CreateVirtualSubnetRequest, context: grpc.ServicerContext
    ) -> types_pb2.VirtualSubnet:
        return self.store.create_virtual_subnet(request.virtual_subnet, tenant=self._tenant())

    def GetVirtualSubnet(
        self, request: policy_pb2.GetVirtualSubnetRequest, context: grpc.ServicerContext
    ) -> types_pb2.VirtualSubnet:
        return self.store.get_virtual_subnet(request.vsid, tenant=self._tenant())

    def UpdateVirtualSubnet(
        self, request: policy_pb2.UpdateVirtualSubnetRequest, context: grpc.ServicerContext
    ) -> types_pb2.VirtualSubnet:
        return self.store.update_virtual_subnet(
            request.virtual_subnet, request.expected_revision, tenant=self._tenant()
        )

    def DeleteVirtualSubnet(
        self, request: policy_pb2.DeleteVirtualSubnetRequest, context: grpc.ServicerContext
    ) -> policy_pb2.DeleteResponse:
        return policy_pb2.DeleteResponse(
            revision=self.store.delete_virtual_subnet(
                request.vsid, request.expected_revision, tenant=self._tenant()
            )
        )

    def ListVirtualSubnets(
        self, request: policy_pb2.ListVirtualSubnetsRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListVirtualSubnetsResponse:
        page = self.store.list_virtual_subnets(request.page, request.rdid, tenant=self._tenant())
        return policy_pb2.ListVirtualSubnetsResponse(
            virtual_subnets=page.items,
            next_page_token=page.next_page_token,
            revision=page.revision,
            unreadable=page.unreadable,
        )

    # -- provider addresses

    def CreateProviderAddress(
        self, request: policy_pb2.CreateProviderAddressRequest, context: grpc.ServicerContext
    ) -> types_pb2.ProviderAddress:
        return self.store.create_provider_address(request.provider_address)

    def GetProviderAddress(
        self, request: policy_pb2.GetProviderAddressRequest, context: grpc.ServicerContext
    ) -> types_pb2.ProviderAddress:
        return self.store.get_provider_address(request.pa_ip)

    def UpdateProviderAddress(
        self, request: policy_pb2.UpdateProviderAddressRequest, context: grpc.ServicerContext
    ) -> types_pb2.ProviderAddress:
        return self.store.update_provider_address(request.provider_address, request.expected_revision)

    def DeleteProviderAddress(
        self, request: policy_pb2.DeleteProviderAddressRequest, context: grpc.ServicerContext
    ) -> policy_pb2.DeleteResponse:
        return policy_pb2.DeleteResponse(
            revision=self.store.delete_provider_address(request.pa_ip, request.expected_revision)
        )

    def ListProviderAddresses(
        self, request: policy_pb2.ListProviderAddressesRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListProviderAddressesResponse:
        page = self.store.list_provider_addresses(request.page)
        return policy_pb2.ListProviderAddressesResponse(
            provider_addresses=page.items,
            next_page_token=page.next_page_token,
            revision=page.revision,
            unreadable=page.unreadable,
        )

    # -- lookup records

    def CreateLookupRecord(
        self, request: policy_pb2.CreateLookupRecordRequest, context: grpc.ServicerContext
    ) -> types_pb2.LookupRecord:
        return self.store.create_lookup_record(request.lookup_record, tenant=self._tenant())

    def GetLookupRecord(
        self, request: policy_pb2.GetLookupRecordRequest, context: grpc.ServicerContext
    ) -> types_pb2.LookupRecord:
        return self.store.get_lookup_record(request.vsid, request.ca, tenant=self._tenant())

    def UpdateLookupRecord(
        self, request: policy_pb2.UpdateLookupRecordRequest, context: grpc.ServicerContext
    ) -> types_pb2.LookupRecord:
        return self.store.update_lookup_record(
            request.lookup_record, request.expected_revision, tenant=self._tenant()
        )

    def DeleteLookupRecord(
        self, request: policy_pb2.DeleteLookupRecordRequest, context: grpc.ServicerContext
    ) -> policy_pb2.DeleteResponse:
        return policy_pb2.DeleteResponse(
            revision=self.store.delete_lookup_record(
                request.vsid, request.ca, request.expected_revision, tenant=self._tenant()
            )
        )

    def ListLookupRecords(
        self, request: policy_pb2.ListLookupRecordsRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListLookupRecordsResponse:
        page = self.store.list_lookup_records(
            request.page, request.vsid, request.rdid, request.pa, tenant=self._tenant()
        )
        return policy_pb2.ListLookupRecordsResponse(
            lookup_records=page.items,
            next_page_token=page.next_page_token,
            revision=page.revision,
            unreadable=page.unreadable,
        )

    def MoveLookupRecords(
        self, request: policy_pb2.MoveLookupRecordsRequest, context: grpc.ServicerContext
    ) -> policy_pb2.MoveLookupRecordsResponse:
        return self.store.move_lookup_records(request, tenant=self._tenant())

    def BulkApplyLookupRecords(
        self,
        request_iterator: Iterator[policy_pb2.BulkApplyLookupRecordsRequest],
        context: grpc.ServicerContext,
    ) -> policy_pb2.BulkApplyLookupRecordsResponse:
        run = self.store.bulk_apply()
        tenant = self._tenant()
        for number, request in enumerate(request_iterator):
            try:
                changes = bulk_changes(request, number, tenant)
            except InvalidPolicy as error:
                raise run.stopped_by(error) from error
            run.feed(changes)
        result = run.finish()
        return policy_pb2.BulkApplyLookupRecordsResponse(
            applied=result.applied,
            transactions=result.transactions,
            revision=result.revision,
            replaced=result.replaced,
        )

    # -- customer routes

    def CreateCustomerRoute(
        self, request: policy_pb2.CreateCustomerRouteRequest, context: grpc.ServicerContext
    ) -> types_pb2.CustomerRoute:
        return self.store.create_customer_route(request.customer_route, tenant=self._tenant())

    def GetCustomerRoute(
        self, request: policy_pb2.GetCustomerRouteRequest, context: grpc.ServicerContext
    ) -> types_pb2.CustomerRoute:
        return self.store.get_customer_route(
            request.rdid, request.vsid, request.destination_prefix, request.next_hop, tenant=self._tenant()
        )

    def UpdateCustomerRoute(
        self, request: policy_pb2.UpdateCustomerRouteRequest, context: grpc.ServicerContext
    ) -> types_pb2.CustomerRoute:
        return self.store.update_customer_route(
            request.customer_route, request.expected_revision, tenant=self._tenant()
        )

    def DeleteCustomerRoute(
        self, request: policy_pb2.DeleteCustomerRouteRequest, context: grpc.ServicerContext
    ) -> policy_pb2.DeleteResponse:
        return policy_pb2.DeleteResponse(
            revision=self.store.delete_customer_route(
                request.rdid,
                request.vsid,
                request.destination_prefix,
                request.next_hop,
                request.expected_revision,
                tenant=self._tenant(),
            )
        )

    def ListCustomerRoutes(
        self, request: policy_pb2.ListCustomerRoutesRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListCustomerRoutesResponse:
        page = self.store.list_customer_routes(
            request.page, request.rdid, request.vsid, tenant=self._tenant()
        )
        return policy_pb2.ListCustomerRoutesResponse(
            customer_routes=page.items,
            next_page_token=page.next_page_token,
            revision=page.revision,
            unreadable=page.unreadable,
        )

    # -- hosts

    def GetHost(self, request: policy_pb2.GetHostRequest, context: grpc.ServicerContext) -> types_pb2.Host:
        return self.store.get_host(request.host_name)

    def ListHosts(
        self, request: policy_pb2.ListHostsRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListHostsResponse:
        page = self.store.list_hosts(request.page)
        return policy_pb2.ListHostsResponse(
            hosts=page.items, next_page_token=page.next_page_token, revision=page.revision
        )

    # -- watch, diagnostics, status

    def WatchTable(
        self, request: policy_pb2.WatchTableRequest, context: grpc.ServicerContext
    ) -> Iterator[policy_pb2.WatchTableResponse]:
        def on_open(cancel: object) -> None:
            # A client that goes away cancels the etcd watch, so the stream's thread ends.
            context.add_callback(cancel)  # type: ignore[arg-type]

        yield from self.store.watch_table(
            request.start_revision, list(request.rdids), on_open, self.watch_backlog, tenant=self._tenant()
        )

    def SelectNextHop(
        self, request: policy_pb2.SelectNextHopRequest, context: grpc.ServicerContext
    ) -> policy_pb2.SelectNextHopResponse:
        scope = request.WhichOneof("scope")
        violations = validation.Violations()
        if scope is None:
            violations.add("scope", "set vsid or rdid")
        elif scope == "vsid":
            validation.check_vsid(request.vsid, "vsid", violations)
        else:
            validation.check_rdid(request.rdid, "rdid", violations)
        source = validation.check_ipv4(request.source_ca, "source_ca", violations)
        destination = validation.check_ipv4(request.destination_ca, "destination_ca", violations)
        violations.raise_if_any("next-hop question")
        tenant = self._tenant()
        if scope == "rdid" and tenant is not None and not tenant.owns(request.rdid):
            raise ResourceNotFound(
                f"routing domain {request.rdid} does not exist",
                [FieldViolation("rdid", f"no routing domain {request.rdid}")],
            )
        rdid = request.rdid if scope == "rdid" else self.store.rdid_of_vsid(request.vsid, tenant=tenant)
        if rdid is None:
            raise ResourceNotFound(
                f"virtual subnet {request.vsid} does not exist",
                [FieldViolation("vsid", f"no virtual subnet with VSID {request.vsid}")],
            )
        kvs, revision = self.store.read_domain_snapshot(rdid)
        table = RoutingTable()
        table.reset(decode_snapshot(kvs), revision)
        answer = select_next_hop(
            table,
            vsid=request.vsid if scope == "vsid" else None,
            rdid=rdid if scope == "rdid" else None,
            source_ca=source,
            destination_ca=destination,
        )
        response = policy_pb2.SelectNextHopResponse(
            found=answer.found,
            pa=answer.pa,
            vsid=answer.vsid,
            mac=answer.mac,
            rule=answer.rule,  # type: ignore[arg-type]
            reasons=answer.reasons,
            source_vsid=answer.source_vsid,
        )
        if answer.record is not None:
            response.record.CopyFrom(answer.record)
        if answer.route is not None:
            response.route.CopyFrom(answer.route)
        return response

    def CheckTable(
        self, request: policy_pb2.CheckTableRequest, context: grpc.ServicerContext
    ) -> policy_pb2.CheckTableResponse:
        found = self.store.check_table(quarantine=request.quarantine)
        return policy_pb2.CheckTableResponse(
            unreadable=found.unreadable,
            found=found.found,
            quarantined=found.quarantined,
            checked=found.checked,
            revision=found.revision,
        )

    def GetTableStatus(
        self, request: policy_pb2.GetTableStatusRequest, context: grpc.ServicerContext
    ) -> policy_pb2.GetTableStatusResponse:
        revision, hosts = self.store.table_status()
        return policy_pb2.GetTableStatusResponse(revision=revision, hosts=hosts)
