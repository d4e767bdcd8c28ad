from overland.v1 import replica_pb2 as _replica_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VmState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VM_STATE_UNSPECIFIED: _ClassVar[VmState]
    VM_STATE_OFF: _ClassVar[VmState]
    VM_STATE_STARTING: _ClassVar[VmState]
    VM_STATE_RUNNING: _ClassVar[VmState]
    VM_STATE_STOPPING: _ClassVar[VmState]

class ReplicationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICATION_MODE_UNSPECIFIED: _ClassVar[ReplicationMode]
    REPLICATION_MODE_NONE: _ClassVar[ReplicationMode]
    REPLICATION_MODE_PRIMARY: _ClassVar[ReplicationMode]
    REPLICATION_MODE_REPLICA: _ClassVar[ReplicationMode]

class VmNetworkSettings(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VM_NETWORK_SETTINGS_UNSPECIFIED: _ClassVar[VmNetworkSettings]
    VM_NETWORK_SETTINGS_PRIMARY: _ClassVar[VmNetworkSettings]
    VM_NETWORK_SETTINGS_FAILOVER: _ClassVar[VmNetworkSettings]
    VM_NETWORK_SETTINGS_TEST: _ClassVar[VmNetworkSettings]
VM_STATE_UNSPECIFIED: VmState
VM_STATE_OFF: VmState
VM_STATE_STARTING: VmState
VM_STATE_RUNNING: VmState
VM_STATE_STOPPING: VmState
REPLICATION_MODE_UNSPECIFIED: ReplicationMode
REPLICATION_MODE_NONE: ReplicationMode
REPLICATION_MODE_PRIMARY: ReplicationMode
REPLICATION_MODE_REPLICA: ReplicationMode
VM_NETWORK_SETTINGS_UNSPECIFIED: VmNetworkSettings
VM_NETWORK_SETTINGS_PRIMARY: VmNetworkSettings
VM_NETWORK_SETTINGS_FAILOVER: VmNetworkSettings
VM_NETWORK_SETTINGS_TEST: VmNetworkSettings

class Vm(_message.Message):
    __slots__ = ("config", "id", "state", "replication_mode", "locked_reason", "network_settings", "create_time_unix_nanos", "start_time_unix_nanos", "pid", "accelerator", "ports", "last_stop", "kernel_command_line")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_MODE_FIELD_NUMBER: _ClassVar[int]
    LOCKED_REASON_FIELD_NUMBER: _ClassVar[int]
    NETWORK_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    LAST_STOP_FIELD_NUMBER: _ClassVar[int]
    KERNEL_COMMAND_LINE_FIELD_NUMBER: _ClassVar[int]
    config: _replica_pb2.VirtualMachine
    id: str
    state: VmState
    replication_mode: ReplicationMode
    locked_reason: str
    network_settings: VmNetworkSettings
    create_time_unix_nanos: int
    start_time_unix_nanos: int
    pid: int
    accelerator: str
    ports: _containers.RepeatedScalarFieldContainer[str]
    last_stop: str
    kernel_command_line: str
    def __init__(self, config: _Optional[_Union[_replica_pb2.VirtualMachine, _Mapping]] = ..., id: _Optional[str] = ..., state: _Optional[_Union[VmState, str]] = ..., replication_mode: _Optional[_Union[ReplicationMode, str]] = ..., locked_reason: _Optional[str] = ..., network_settings: _Optional[_Union[VmNetworkSettings, str]] = ..., create_time_unix_nanos: _Optional[int] = ..., start_time_unix_nanos: _Optional[int] = ..., pid: _Optional[int] = ..., accelerator: _Optional[str] = ..., ports: _Optional[_Iterable[str]] = ..., last_stop: _Optional[str] = ..., kernel_command_line: _Optional[str] = ...) -> None: ...

class CreateVmRequest(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: _replica_pb2.VirtualMachine
    def __init__(self, vm: _Optional[_Union[_replica_pb2.VirtualMachine, _Mapping]] = ...) -> None: ...

class StartVmRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StopVmRequest(_message.Message):
    __slots__ = ("name", "turn_off", "timeout_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TURN_OFF_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    turn_off: bool
    timeout_seconds: int
    def __init__(self, name: _Optional[str] = ..., turn_off: _Optional[bool] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class GetVmRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListVmsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVmsResponse(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[Vm]
    def __init__(self, vms: _Optional[_Iterable[_Union[Vm, _Mapping]]] = ...) -> None: ...

class DeleteVmRequest(_message.Message):
    __slots__ = ("name", "delete_disks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DELETE_DISKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    delete_disks: bool
    def __init__(self, name: _Optional[str] = ..., delete_disks: _Optional[bool] = ...) -> None: ...

class GetConsoleLogRequest(_message.Message):
    __slots__ = ("name", "offset", "max_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    max_bytes: int
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class ConsoleLog(_message.Message):
    __slots__ = ("data", "offset", "next_offset", "size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    next_offset: int
    size: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., next_offset: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...
