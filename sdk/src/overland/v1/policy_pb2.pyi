from overland.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class CreateRoutingDomainRequest(_message.Message):
    __slots__ = ("routing_domain",)
    ROUTING_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    routing_domain: _types_pb2.RoutingDomain
    def __init__(self, routing_domain: _Optional[_Union[_types_pb2.RoutingDomain, _Mapping]] = ...) -> None: ...

class GetRoutingDomainRequest(_message.Message):
    __slots__ = ("rdid",)
    RDID_FIELD_NUMBER: _ClassVar[int]
    rdid: str
    def __init__(self, rdid: _Optional[str] = ...) -> None: ...

class UpdateRoutingDomainRequest(_message.Message):
    __slots__ = ("routing_domain", "expected_revision")
    ROUTING_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    routing_domain: _types_pb2.RoutingDomain
    expected_revision: int
    def __init__(self, routing_domain: _Optional[_Union[_types_pb2.RoutingDomain, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteRoutingDomainRequest(_message.Message):
    __slots__ = ("rdid", "expected_revision")
    RDID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    rdid: str
    expected_revision: int
    def __init__(self, rdid: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ListRoutingDomainsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListRoutingDomainsResponse(_message.Message):
    __slots__ = ("routing_domains", "next_page_token", "revision", "unreadable")
    ROUTING_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    routing_domains: _containers.RepeatedCompositeFieldContainer[_types_pb2.RoutingDomain]
    next_page_token: str
    revision: int
    unreadable: _containers.RepeatedCompositeFieldContainer[_types_pb2.UnreadableEntry]
    def __init__(self, routing_domains: _Optional[_Iterable[_Union[_types_pb2.RoutingDomain, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ..., unreadable: _Optional[_Iterable[_Union[_types_pb2.UnreadableEntry, _Mapping]]] = ...) -> None: ...

class CreateVirtualSubnetRequest(_message.Message):
    __slots__ = ("virtual_subnet",)
    VIRTUAL_SUBNET_FIELD_NUMBER: _ClassVar[int]
    virtual_subnet: _types_pb2.VirtualSubnet
    def __init__(self, virtual_subnet: _Optional[_Union[_types_pb2.VirtualSubnet, _Mapping]] = ...) -> None: ...

class GetVirtualSubnetRequest(_message.Message):
    __slots__ = ("vsid",)
    VSID_FIELD_NUMBER: _ClassVar[int]
    vsid: int
    def __init__(self, vsid: _Optional[int] = ...) -> None: ...

class UpdateVirtualSubnetRequest(_message.Message):
    __slots__ = ("virtual_subnet", "expected_revision")
    VIRTUAL_SUBNET_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    virtual_subnet: _types_pb2.VirtualSubnet
    expected_revision: int
    def __init__(self, virtual_subnet: _Optional[_Union[_types_pb2.VirtualSubnet, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteVirtualSubnetRequest(_message.Message):
    __slots__ = ("vsid", "expected_revision")
    VSID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    vsid: int
    expected_revision: int
    def __init__(self, vsid: _Optional[int] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ListVirtualSubnetsRequest(_message.Message):
    __slots__ = ("page", "rdid")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    RDID_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    rdid: str
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ..., rdid: _Optional[str] = ...) -> None: ...

class ListVirtualSubnetsResponse(_message.Message):
    __slots__ = ("virtual_subnets", "next_page_token", "revision", "unreadable")
    VIRTUAL_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    virtual_subnets: _containers.RepeatedCompositeFieldContainer[_types_pb2.VirtualSubnet]
    next_page_token: str
    revision: int
    unreadable: _containers.RepeatedCompositeFieldContainer[_types_pb2.UnreadableEntry]
    def __init__(self, virtual_subnets: _Optional[_Iterable[_Union[_types_pb2.VirtualSubnet, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ..., unreadable: _Optional[_Iterable[_Union[_types_pb2.UnreadableEntry, _Mapping]]] = ...) -> None: ...

class CreateProviderAddressRequest(_message.Message):
    __slots__ = ("provider_address",)
    PROVIDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    provider_address: _types_pb2.ProviderAddress
    def __init__(self, provider_address: _Optional[_Union[_types_pb2.ProviderAddress, _Mapping]] = ...) -> None: ...

class GetProviderAddressRequest(_message.Message):
    __slots__ = ("pa_ip",)
    PA_IP_FIELD_NUMBER: _ClassVar[int]
    pa_ip: str
    def __init__(self, pa_ip: _Optional[str] = ...) -> None: ...

class UpdateProviderAddressRequest(_message.Message):
    __slots__ = ("provider_address", "expected_revision")
    PROVIDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    provider_address: _types_pb2.ProviderAddress
    expected_revision: int
    def __init__(self, provider_address: _Optional[_Union[_types_pb2.ProviderAddress, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteProviderAddressRequest(_message.Message):
    __slots__ = ("pa_ip", "expected_revision")
    PA_IP_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    pa_ip: str
    expected_revision: int
    def __init__(self, pa_ip: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ListProviderAddressesRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListProviderAddressesResponse(_message.Message):
    __slots__ = ("provider_addresses", "next_page_token", "revision", "unreadable")
    PROVIDER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    provider_addresses: _containers.RepeatedCompositeFieldContainer[_types_pb2.ProviderAddress]
    next_page_token: str
    revision: int
    unreadable: _containers.RepeatedCompositeFieldContainer[_types_pb2.UnreadableEntry]
    def __init__(self, provider_addresses: _Optional[_Iterable[_Union[_types_pb2.ProviderAddress, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ..., unreadable: _Optional[_Iterable[_Union[_types_pb2.UnreadableEntry, _Mapping]]] = ...) -> None: ...

class CreateLookupRecordRequest(_message.Message):
    __slots__ = ("lookup_record",)
    LOOKUP_RECORD_FIELD_NUMBER: _ClassVar[int]
    lookup_record: _types_pb2.LookupRecord
    def __init__(self, lookup_record: _Optional[_Union[_types_pb2.LookupRecord, _Mapping]] = ...) -> None: ...

class GetLookupRecordRequest(_message.Message):
    __slots__ = ("vsid", "ca")
    VSID_FIELD_NUMBER: _ClassVar[int]
    CA_FIELD_NUMBER: _ClassVar[int]
    vsid: int
    ca: str
    def __init__(self, vsid: _Optional[int] = ..., ca: _Optional[str] = ...) -> None: ...

class UpdateLookupRecordRequest(_message.Message):
    __slots__ = ("lookup_record", "expected_revision")
    LOOKUP_RECORD_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    lookup_record: _types_pb2.LookupRecord
    expected_revision: int
    def __init__(self, lookup_record: _Optional[_Union[_types_pb2.LookupRecord, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteLookupRecordRequest(_message.Message):
    __slots__ = ("vsid", "ca", "expected_revision")
    VSID_FIELD_NUMBER: _ClassVar[int]
    CA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    vsid: int
    ca: str
    expected_revision: int
    def __init__(self, vsid: _Optional[int] = ..., ca: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ListLookupRecordsRequest(_message.Message):
    __slots__ = ("page", "vsid", "rdid", "pa")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    RDID_FIELD_NUMBER: _ClassVar[int]
    PA_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    vsid: int
    rdid: str
    pa: str
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ..., vsid: _Optional[int] = ..., rdid: _Optional[str] = ..., pa: _Optional[str] = ...) -> None: ...

class ListLookupRecordsResponse(_message.Message):
    __slots__ = ("lookup_records", "next_page_token", "revision", "unreadable")
    LOOKUP_RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    lookup_records: _containers.RepeatedCompositeFieldContainer[_types_pb2.LookupRecord]
    next_page_token: str
    revision: int
    unreadable: _containers.RepeatedCompositeFieldContainer[_types_pb2.UnreadableEntry]
    def __init__(self, lookup_records: _Optional[_Iterable[_Union[_types_pb2.LookupRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ..., unreadable: _Optional[_Iterable[_Union[_types_pb2.UnreadableEntry, _Mapping]]] = ...) -> None: ...

class CreateCustomerRouteRequest(_message.Message):
    __slots__ = ("customer_route",)
    CUSTOMER_ROUTE_FIELD_NUMBER: _ClassVar[int]
    customer_route: _types_pb2.CustomerRoute
    def __init__(self, customer_route: _Optional[_Union[_types_pb2.CustomerRoute, _Mapping]] = ...) -> None: ...

class GetCustomerRouteRequest(_message.Message):
    __slots__ = ("rdid", "vsid", "destination_prefix", "next_hop")
    RDID_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_FIELD_NUMBER: _ClassVar[int]
    rdid: str
    vsid: int
    destination_prefix: str
    next_hop: str
    def __init__(self, rdid: _Optional[str] = ..., vsid: _Optional[int] = ..., destination_prefix: _Optional[str] = ..., next_hop: _Optional[str] = ...) -> None: ...

class UpdateCustomerRouteRequest(_message.Message):
    __slots__ = ("customer_route", "expected_revision")
    CUSTOMER_ROUTE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    customer_route: _types_pb2.CustomerRoute
    expected_revision: int
    def __init__(self, customer_route: _Optional[_Union[_types_pb2.CustomerRoute, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteCustomerRouteRequest(_message.Message):
    __slots__ = ("rdid", "vsid", "destination_prefix", "next_hop", "expected_revision")
    RDID_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    rdid: str
    vsid: int
    destination_prefix: str
    next_hop: str
    expected_revision: int
    def __init__(self, rdid: _Optional[str] = ..., vsid: _Optional[int] = ..., destination_prefix: _Optional[str] = ..., next_hop: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ListCustomerRoutesRequest(_message.Message):
    __slots__ = ("page", "rdid", "vsid")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    RDID_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    rdid: str
    vsid: int
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ..., rdid: _Optional[str] = ..., vsid: _Optional[int] = ...) -> None: ...

class ListCustomerRoutesResponse(_message.Message):
    __slots__ = ("customer_routes", "next_page_token", "revision", "unreadable")
    CUSTOMER_ROUTES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    customer_routes: _containers.RepeatedCompositeFieldContainer[_types_pb2.CustomerRoute]
    next_page_token: str
    revision: int
    unreadable: _containers.RepeatedCompositeFieldContainer[_types_pb2.UnreadableEntry]
    def __init__(self, customer_routes: _Optional[_Iterable[_Union[_types_pb2.CustomerRoute, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ..., unreadable: _Optional[_Iterable[_Union[_types_pb2.UnreadableEntry, _Mapping]]] = ...) -> None: ...

class BulkApplyLookupRecordsRequest(_message.Message):
    __slots__ = ("upserts", "deletes", "create_only")
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    CREATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    upserts: _containers.RepeatedCompositeFieldContainer[_types_pb2.LookupRecord]
    deletes: _containers.RepeatedCompositeFieldContainer[_types_pb2.LookupRecord]
    create_only: bool
    def __init__(self, upserts: _Optional[_Iterable[_Union[_types_pb2.LookupRecord, _Mapping]]] = ..., deletes: _Optional[_Iterable[_Union[_types_pb2.LookupRecord, _Mapping]]] = ..., create_only: _Optional[bool] = ...) -> None: ...

class BulkApplyLookupRecordsResponse(_message.Message):
    __slots__ = ("applied", "transactions", "revision", "replaced")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    applied: int
    transactions: int
    revision: int
    replaced: int
    def __init__(self, applied: _Optional[int] = ..., transactions: _Optional[int] = ..., revision: _Optional[int] = ..., replaced: _Optional[int] = ...) -> None: ...

class RecordMove(_message.Message):
    __slots__ = ("vsid", "ca", "new_ca", "expected_revision")
    VSID_FIELD_NUMBER: _ClassVar[int]
    CA_FIELD_NUMBER: _ClassVar[int]
    NEW_CA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    vsid: int
    ca: str
    new_ca: str
    expected_revision: int
    def __init__(self, vsid: _Optional[int] = ..., ca: _Optional[str] = ..., new_ca: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class MoveLookupRecordsRequest(_message.Message):
    __slots__ = ("moves", "host_name", "pa")
    MOVES_FIELD_NUMBER: _ClassVar[int]
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    PA_FIELD_NUMBER: _ClassVar[int]
    moves: _containers.RepeatedCompositeFieldContainer[RecordMove]
    host_name: str
    pa: str
    def __init__(self, moves: _Optional[_Iterable[_Union[RecordMove, _Mapping]]] = ..., host_name: _Optional[str] = ..., pa: _Optional[str] = ...) -> None: ...

class MoveLookupRecordsResponse(_message.Message):
    __slots__ = ("lookup_records", "revision", "pa")
    LOOKUP_RECORDS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PA_FIELD_NUMBER: _ClassVar[int]
    lookup_records: _containers.RepeatedCompositeFieldContainer[_types_pb2.LookupRecord]
    revision: int
    pa: str
    def __init__(self, lookup_records: _Optional[_Iterable[_Union[_types_pb2.LookupRecord, _Mapping]]] = ..., revision: _Optional[int] = ..., pa: _Optional[str] = ...) -> None: ...

class GetHostRequest(_message.Message):
    __slots__ = ("host_name",)
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    host_name: str
    def __init__(self, host_name: _Optional[str] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts", "next_page_token", "revision")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[_types_pb2.Host]
    next_page_token: str
    revision: int
    def __init__(self, hosts: _Optional[_Iterable[_Union[_types_pb2.Host, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class WatchTableRequest(_message.Message):
    __slots__ = ("start_revision", "rdids")
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    RDIDS_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    rdids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, start_revision: _Optional[int] = ..., rdids: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchTableResponse(_message.Message):
    __slots__ = ("events", "revision", "unreadable")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_types_pb2.TableEvent]
    revision: int
    unreadable: _containers.RepeatedCompositeFieldContainer[_types_pb2.UnreadableEntry]
    def __init__(self, events: _Optional[_Iterable[_Union[_types_pb2.TableEvent, _Mapping]]] = ..., revision: _Optional[int] = ..., unreadable: _Optional[_Iterable[_Union[_types_pb2.UnreadableEntry, _Mapping]]] = ...) -> None: ...

class SelectNextHopRequest(_message.Message):
    __slots__ = ("vsid", "rdid", "source_ca", "destination_ca")
    VSID_FIELD_NUMBER: _ClassVar[int]
    RDID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CA_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_CA_FIELD_NUMBER: _ClassVar[int]
    vsid: int
    rdid: str
    source_ca: str
    destination_ca: str
    def __init__(self, vsid: _Optional[int] = ..., rdid: _Optional[str] = ..., source_ca: _Optional[str] = ..., destination_ca: _Optional[str] = ...) -> None: ...

class SelectNextHopResponse(_message.Message):
    __slots__ = ("found", "pa", "vsid", "mac", "rule", "record", "route", "reasons", "source_vsid")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PA_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VSID_FIELD_NUMBER: _ClassVar[int]
    found: bool
    pa: str
    vsid: int
    mac: str
    rule: _types_pb2.LookupRule
    record: _types_pb2.LookupRecord
    route: _types_pb2.CustomerRoute
    reasons: _containers.RepeatedScalarFieldContainer[str]
    source_vsid: int
    def __init__(self, found: _Optional[bool] = ..., pa: _Optional[str] = ..., vsid: _Optional[int] = ..., mac: _Optional[str] = ..., rule: _Optional[_Union[_types_pb2.LookupRule, str]] = ..., record: _Optional[_Union[_types_pb2.LookupRecord, _Mapping]] = ..., route: _Optional[_Union[_types_pb2.CustomerRoute, _Mapping]] = ..., reasons: _Optional[_Iterable[str]] = ..., source_vsid: _Optional[int] = ...) -> None: ...

class CheckTableRequest(_message.Message):
    __slots__ = ("quarantine",)
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    quarantine: bool
    def __init__(self, quarantine: _Optional[bool] = ...) -> None: ...

class CheckTableResponse(_message.Message):
    __slots__ = ("unreadable", "found", "quarantined", "checked", "revision")
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    unreadable: _containers.RepeatedCompositeFieldContainer[_types_pb2.UnreadableEntry]
    found: int
    quarantined: int
    checked: int
    revision: int
    def __init__(self, unreadable: _Optional[_Iterable[_Union[_types_pb2.UnreadableEntry, _Mapping]]] = ..., found: _Optional[int] = ..., quarantined: _Optional[int] = ..., checked: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class GetTableStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTableStatusResponse(_message.Message):
    __slots__ = ("revision", "hosts")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    hosts: _containers.RepeatedCompositeFieldContainer[_types_pb2.HostStatus]
    def __init__(self, revision: _Optional[int] = ..., hosts: _Optional[_Iterable[_Union[_types_pb2.HostStatus, _Mapping]]] = ...) -> None: ...
