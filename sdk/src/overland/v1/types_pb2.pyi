from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LookupRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOOKUP_RULE_UNSPECIFIED: _ClassVar[LookupRule]
    LOOKUP_RULE_ENCAP: _ClassVar[LookupRule]
    LOOKUP_RULE_NONE: _ClassVar[LookupRule]

class LookupType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOOKUP_TYPE_UNSPECIFIED: _ClassVar[LookupType]
    LOOKUP_TYPE_STATIC: _ClassVar[LookupType]
    LOOKUP_TYPE_L2_ONLY: _ClassVar[LookupType]
    LOOKUP_TYPE_GATEWAY_WILDCARD: _ClassVar[LookupType]
LOOKUP_RULE_UNSPECIFIED: LookupRule
LOOKUP_RULE_ENCAP: LookupRule
LOOKUP_RULE_NONE: LookupRule
LOOKUP_TYPE_UNSPECIFIED: LookupType
LOOKUP_TYPE_STATIC: LookupType
LOOKUP_TYPE_L2_ONLY: LookupType
LOOKUP_TYPE_GATEWAY_WILDCARD: LookupType

class RoutingDomain(_message.Message):
    __slots__ = ("rdid", "tenant_name", "description", "revision")
    RDID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    rdid: str
    tenant_name: str
    description: str
    revision: int
    def __init__(self, rdid: _Optional[str] = ..., tenant_name: _Optional[str] = ..., description: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class VirtualSubnet(_message.Message):
    __slots__ = ("vsid", "rdid", "ca_prefixes", "gateway_ip", "gateway_mac", "description", "revision")
    VSID_FIELD_NUMBER: _ClassVar[int]
    RDID_FIELD_NUMBER: _ClassVar[int]
    CA_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_IP_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_MAC_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    vsid: int
    rdid: str
    ca_prefixes: _containers.RepeatedScalarFieldContainer[str]
    gateway_ip: str
    gateway_mac: str
    description: str
    revision: int
    def __init__(self, vsid: _Optional[int] = ..., rdid: _Optional[str] = ..., ca_prefixes: _Optional[_Iterable[str]] = ..., gateway_ip: _Optional[str] = ..., gateway_mac: _Optional[str] = ..., description: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ProviderAddress(_message.Message):
    __slots__ = ("host_name", "pa_ip", "prefix_length", "vlan_id", "revision")
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    PA_IP_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VLAN_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    host_name: str
    pa_ip: str
    prefix_length: int
    vlan_id: int
    revision: int
    def __init__(self, host_name: _Optional[str] = ..., pa_ip: _Optional[str] = ..., prefix_length: _Optional[int] = ..., vlan_id: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class LookupRecord(_message.Message):
    __slots__ = ("ca", "vsid", "mac", "pa", "vm_name", "rule", "type", "rdid", "revision")
    CA_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    PA_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RDID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ca: str
    vsid: int
    mac: str
    pa: str
    vm_name: str
    rule: LookupRule
    type: LookupType
    rdid: str
    revision: int
    def __init__(self, ca: _Optional[str] = ..., vsid: _Optional[int] = ..., mac: _Optional[str] = ..., pa: _Optional[str] = ..., vm_name: _Optional[str] = ..., rule: _Optional[_Union[LookupRule, str]] = ..., type: _Optional[_Union[LookupType, str]] = ..., rdid: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class CustomerRoute(_message.Message):
    __slots__ = ("rdid", "vsid", "destination_prefix", "next_hop", "metric", "revision")
    RDID_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    rdid: str
    vsid: int
    destination_prefix: str
    next_hop: str
    metric: int
    revision: int
    def __init__(self, rdid: _Optional[str] = ..., vsid: _Optional[int] = ..., destination_prefix: _Optional[str] = ..., next_hop: _Optional[str] = ..., metric: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class HostStatus(_message.Message):
    __slots__ = ("host_name", "pa_ip", "applied_revision", "applied_time_unix_nanos", "alive", "lag_revisions")
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    PA_IP_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LAG_REVISIONS_FIELD_NUMBER: _ClassVar[int]
    host_name: str
    pa_ip: str
    applied_revision: int
    applied_time_unix_nanos: int
    alive: bool
    lag_revisions: int
    def __init__(self, host_name: _Optional[str] = ..., pa_ip: _Optional[str] = ..., applied_revision: _Optional[int] = ..., applied_time_unix_nanos: _Optional[int] = ..., alive: _Optional[bool] = ..., lag_revisions: _Optional[int] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("host_name", "pa_ip", "registration_time_unix_nanos", "alive", "status", "revision")
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    PA_IP_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    host_name: str
    pa_ip: str
    registration_time_unix_nanos: int
    alive: bool
    status: HostStatus
    revision: int
    def __init__(self, host_name: _Optional[str] = ..., pa_ip: _Optional[str] = ..., registration_time_unix_nanos: _Optional[int] = ..., alive: _Optional[bool] = ..., status: _Optional[_Union[HostStatus, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class TraceContext(_message.Message):
    __slots__ = ("traceparent", "tracestate")
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    traceparent: str
    tracestate: str
    def __init__(self, traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class StoreEntry(_message.Message):
    __slots__ = ("routing_domain", "virtual_subnet", "provider_address", "lookup_record", "customer_route", "host_status", "host", "trace", "write_time_unix_nanos")
    ROUTING_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SUBNET_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_RECORD_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ROUTE_FIELD_NUMBER: _ClassVar[int]
    HOST_STATUS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    WRITE_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    routing_domain: RoutingDomain
    virtual_subnet: VirtualSubnet
    provider_address: ProviderAddress
    lookup_record: LookupRecord
    customer_route: CustomerRoute
    host_status: HostStatus
    host: Host
    trace: TraceContext
    write_time_unix_nanos: int
    def __init__(self, routing_domain: _Optional[_Union[RoutingDomain, _Mapping]] = ..., virtual_subnet: _Optional[_Union[VirtualSubnet, _Mapping]] = ..., provider_address: _Optional[_Union[ProviderAddress, _Mapping]] = ..., lookup_record: _Optional[_Union[LookupRecord, _Mapping]] = ..., customer_route: _Optional[_Union[CustomerRoute, _Mapping]] = ..., host_status: _Optional[_Union[HostStatus, _Mapping]] = ..., host: _Optional[_Union[Host, _Mapping]] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ..., write_time_unix_nanos: _Optional[int] = ...) -> None: ...

class TableEvent(_message.Message):
    __slots__ = ("type", "key", "entry", "revision")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[TableEvent.Type]
        TYPE_PUT: _ClassVar[TableEvent.Type]
        TYPE_DELETE: _ClassVar[TableEvent.Type]
    TYPE_UNSPECIFIED: TableEvent.Type
    TYPE_PUT: TableEvent.Type
    TYPE_DELETE: TableEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: TableEvent.Type
    key: str
    entry: StoreEntry
    revision: int
    def __init__(self, type: _Optional[_Union[TableEvent.Type, str]] = ..., key: _Optional[str] = ..., entry: _Optional[_Union[StoreEntry, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class PageRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class UnreadableEntry(_message.Message):
    __slots__ = ("key", "reason", "mod_revision")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    key: str
    reason: str
    mod_revision: int
    def __init__(self, key: _Optional[str] = ..., reason: _Optional[str] = ..., mod_revision: _Optional[int] = ...) -> None: ...
