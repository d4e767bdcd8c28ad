from overland.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PortBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PORT_BACKEND_UNSPECIFIED: _ClassVar[PortBackend]
    PORT_BACKEND_TAP_FD: _ClassVar[PortBackend]
    PORT_BACKEND_TAP_KERNEL: _ClassVar[PortBackend]
PORT_BACKEND_UNSPECIFIED: PortBackend
PORT_BACKEND_TAP_FD: PortBackend
PORT_BACKEND_TAP_KERNEL: PortBackend

class GetAgentStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("host_name", "pa_ip", "applied_revision", "connected", "datapath", "pa_mtu", "inner_mtu", "lookup_records", "virtual_subnets", "customer_routes", "provider_addresses", "registered", "syncs", "resets_after_compaction", "stream_breaks", "last_sync_seconds", "last_sync_keys", "rejected_keys", "routing_domains", "rdids")
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    PA_IP_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DATAPATH_FIELD_NUMBER: _ClassVar[int]
    PA_MTU_FIELD_NUMBER: _ClassVar[int]
    INNER_MTU_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_RECORDS_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ROUTES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    SYNCS_FIELD_NUMBER: _ClassVar[int]
    RESETS_AFTER_COMPACTION_FIELD_NUMBER: _ClassVar[int]
    STREAM_BREAKS_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_KEYS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_KEYS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    RDIDS_FIELD_NUMBER: _ClassVar[int]
    host_name: str
    pa_ip: str
    applied_revision: int
    connected: bool
    datapath: bool
    pa_mtu: int
    inner_mtu: int
    lookup_records: int
    virtual_subnets: int
    customer_routes: int
    provider_addresses: int
    registered: bool
    syncs: int
    resets_after_compaction: int
    stream_breaks: int
    last_sync_seconds: float
    last_sync_keys: int
    rejected_keys: int
    routing_domains: int
    rdids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, host_name: _Optional[str] = ..., pa_ip: _Optional[str] = ..., applied_revision: _Optional[int] = ..., connected: _Optional[bool] = ..., datapath: _Optional[bool] = ..., pa_mtu: _Optional[int] = ..., inner_mtu: _Optional[int] = ..., lookup_records: _Optional[int] = ..., virtual_subnets: _Optional[int] = ..., customer_routes: _Optional[int] = ..., provider_addresses: _Optional[int] = ..., registered: _Optional[bool] = ..., syncs: _Optional[int] = ..., resets_after_compaction: _Optional[int] = ..., stream_breaks: _Optional[int] = ..., last_sync_seconds: _Optional[float] = ..., last_sync_keys: _Optional[int] = ..., rejected_keys: _Optional[int] = ..., routing_domains: _Optional[int] = ..., rdids: _Optional[_Iterable[str]] = ...) -> None: ...

class DumpTableRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DumpTableResponse(_message.Message):
    __slots__ = ("applied_revision", "routing_domains", "virtual_subnets", "provider_addresses", "lookup_records", "customer_routes")
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    ROUTING_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_RECORDS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ROUTES_FIELD_NUMBER: _ClassVar[int]
    applied_revision: int
    routing_domains: _containers.RepeatedCompositeFieldContainer[_types_pb2.RoutingDomain]
    virtual_subnets: _containers.RepeatedCompositeFieldContainer[_types_pb2.VirtualSubnet]
    provider_addresses: _containers.RepeatedCompositeFieldContainer[_types_pb2.ProviderAddress]
    lookup_records: _containers.RepeatedCompositeFieldContainer[_types_pb2.LookupRecord]
    customer_routes: _containers.RepeatedCompositeFieldContainer[_types_pb2.CustomerRoute]
    def __init__(self, applied_revision: _Optional[int] = ..., routing_domains: _Optional[_Iterable[_Union[_types_pb2.RoutingDomain, _Mapping]]] = ..., virtual_subnets: _Optional[_Iterable[_Union[_types_pb2.VirtualSubnet, _Mapping]]] = ..., provider_addresses: _Optional[_Iterable[_Union[_types_pb2.ProviderAddress, _Mapping]]] = ..., lookup_records: _Optional[_Iterable[_Union[_types_pb2.LookupRecord, _Mapping]]] = ..., customer_routes: _Optional[_Iterable[_Union[_types_pb2.CustomerRoute, _Mapping]]] = ...) -> None: ...

class Port(_message.Message):
    __slots__ = ("name", "mac", "vsid", "ca", "vm_name", "netns", "from_policy", "backend", "mtu")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    CA_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    FROM_POLICY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    name: str
    mac: str
    vsid: int
    ca: str
    vm_name: str
    netns: str
    from_policy: bool
    backend: PortBackend
    mtu: int
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., vsid: _Optional[int] = ..., ca: _Optional[str] = ..., vm_name: _Optional[str] = ..., netns: _Optional[str] = ..., from_policy: _Optional[bool] = ..., backend: _Optional[_Union[PortBackend, str]] = ..., mtu: _Optional[int] = ...) -> None: ...

class AttachPortRequest(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: Port
    def __init__(self, port: _Optional[_Union[Port, _Mapping]] = ...) -> None: ...

class DetachPortRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DetachPortResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPortsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPortsResponse(_message.Message):
    __slots__ = ("ports",)
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    def __init__(self, ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ...) -> None: ...

class GetCountersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Counters(_message.Message):
    __slots__ = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops", "arp_replies", "icmp_frag_needed")
    class DropsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    ARP_REPLIES_FIELD_NUMBER: _ClassVar[int]
    ICMP_FRAG_NEEDED_FIELD_NUMBER: _ClassVar[int]
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    drops: _containers.ScalarMap[str, int]
    arp_replies: int
    icmp_frag_needed: int
    def __init__(self, rx_packets: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., tx_packets: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., drops: _Optional[_Mapping[str, int]] = ..., arp_replies: _Optional[int] = ..., icmp_frag_needed: _Optional[int] = ...) -> None: ...

class Extension(_message.Message):
    __slots__ = ("name", "kind", "order", "enabled", "settings")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Extension.Kind]
        KIND_CAPTURE: _ClassVar[Extension.Kind]
        KIND_FILTER: _ClassVar[Extension.Kind]
        KIND_FORWARD: _ClassVar[Extension.Kind]
    KIND_UNSPECIFIED: Extension.Kind
    KIND_CAPTURE: Extension.Kind
    KIND_FILTER: Extension.Kind
    KIND_FORWARD: Extension.Kind
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: Extension.Kind
    order: int
    enabled: bool
    settings: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[Extension.Kind, str]] = ..., order: _Optional[int] = ..., enabled: _Optional[bool] = ..., settings: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListExtensionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExtensionsResponse(_message.Message):
    __slots__ = ("extensions",)
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    extensions: _containers.RepeatedCompositeFieldContainer[Extension]
    def __init__(self, extensions: _Optional[_Iterable[_Union[Extension, _Mapping]]] = ...) -> None: ...

class ConfigureExtensionRequest(_message.Message):
    __slots__ = ("extension",)
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    extension: Extension
    def __init__(self, extension: _Optional[_Union[Extension, _Mapping]] = ...) -> None: ...
