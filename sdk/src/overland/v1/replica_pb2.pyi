from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICATION_STATE_UNSPECIFIED: _ClassVar[ReplicationState]
    REPLICATION_STATE_DISABLED: _ClassVar[ReplicationState]
    REPLICATION_STATE_READY_FOR_INITIAL_REPLICATION: _ClassVar[ReplicationState]
    REPLICATION_STATE_INITIAL_REPLICATION_IN_PROGRESS: _ClassVar[ReplicationState]
    REPLICATION_STATE_WAITING_FOR_INITIAL_REPLICATION: _ClassVar[ReplicationState]
    REPLICATION_STATE_REPLICATING: _ClassVar[ReplicationState]
    REPLICATION_STATE_SYNCED_REPLICATION_COMPLETE: _ClassVar[ReplicationState]
    REPLICATION_STATE_RECOVERED: _ClassVar[ReplicationState]
    REPLICATION_STATE_COMMITED: _ClassVar[ReplicationState]
    REPLICATION_STATE_SUSPENDED: _ClassVar[ReplicationState]
    REPLICATION_STATE_CRITICAL: _ClassVar[ReplicationState]
    REPLICATION_STATE_WAITING_TO_COMPLETE_INITIAL_REPLICATION: _ClassVar[ReplicationState]
    REPLICATION_STATE_RESYNCHRONIZING: _ClassVar[ReplicationState]

class ReplicationHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICATION_HEALTH_UNSPECIFIED: _ClassVar[ReplicationHealth]
    REPLICATION_HEALTH_NORMAL: _ClassVar[ReplicationHealth]
    REPLICATION_HEALTH_WARNING: _ClassVar[ReplicationHealth]
    REPLICATION_HEALTH_CRITICAL: _ClassVar[ReplicationHealth]

class InitialReplicationMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INITIAL_REPLICATION_METHOD_UNSPECIFIED: _ClassVar[InitialReplicationMethod]
    INITIAL_REPLICATION_METHOD_NETWORK: _ClassVar[InitialReplicationMethod]
    INITIAL_REPLICATION_METHOD_EXTERNAL_MEDIA: _ClassVar[InitialReplicationMethod]
    INITIAL_REPLICATION_METHOD_EXISTING_COPY: _ClassVar[InitialReplicationMethod]

class DiskFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISK_FORMAT_UNSPECIFIED: _ClassVar[DiskFormat]
    DISK_FORMAT_VHD: _ClassVar[DiskFormat]
    DISK_FORMAT_RAW: _ClassVar[DiskFormat]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_UNSPECIFIED: _ClassVar[Compression]
    COMPRESSION_AUTO: _ClassVar[Compression]
    COMPRESSION_OFF: _ClassVar[Compression]
    COMPRESSION_ZSTD: _ClassVar[Compression]

class CycleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CYCLE_KIND_UNSPECIFIED: _ClassVar[CycleKind]
    CYCLE_KIND_INITIAL: _ClassVar[CycleKind]
    CYCLE_KIND_EXPORT: _ClassVar[CycleKind]
    CYCLE_KIND_EXISTING_COPY: _ClassVar[CycleKind]
    CYCLE_KIND_DELTA: _ClassVar[CycleKind]
    CYCLE_KIND_RESYNC: _ClassVar[CycleKind]
    CYCLE_KIND_AWAIT_IMPORT: _ClassVar[CycleKind]

class CycleState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CYCLE_STATE_UNSPECIFIED: _ClassVar[CycleState]
    CYCLE_STATE_QUEUED: _ClassVar[CycleState]
    CYCLE_STATE_RUNNING: _ClassVar[CycleState]
    CYCLE_STATE_SUCCEEDED: _ClassVar[CycleState]
    CYCLE_STATE_FAILED: _ClassVar[CycleState]

class FailoverState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILOVER_STATE_UNSPECIFIED: _ClassVar[FailoverState]
    FAILOVER_STATE_PRIMARY: _ClassVar[FailoverState]
    FAILOVER_STATE_PREPARED: _ClassVar[FailoverState]
    FAILOVER_STATE_REPLICA: _ClassVar[FailoverState]
    FAILOVER_STATE_FAILED_OVER: _ClassVar[FailoverState]
    FAILOVER_STATE_FAILOVER_COMPLETE: _ClassVar[FailoverState]

class CheckResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_RESULT_UNSPECIFIED: _ClassVar[CheckResult]
    CHECK_RESULT_PASSED: _ClassVar[CheckResult]
    CHECK_RESULT_FAILED: _ClassVar[CheckResult]
    CHECK_RESULT_SKIPPED: _ClassVar[CheckResult]

class ChunkChecksum(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHUNK_CHECKSUM_UNSPECIFIED: _ClassVar[ChunkChecksum]
    CHUNK_CHECKSUM_BLAKE3: _ClassVar[ChunkChecksum]
    CHUNK_CHECKSUM_XXH3_128: _ClassVar[ChunkChecksum]
REPLICATION_STATE_UNSPECIFIED: ReplicationState
REPLICATION_STATE_DISABLED: ReplicationState
REPLICATION_STATE_READY_FOR_INITIAL_REPLICATION: ReplicationState
REPLICATION_STATE_INITIAL_REPLICATION_IN_PROGRESS: ReplicationState
REPLICATION_STATE_WAITING_FOR_INITIAL_REPLICATION: ReplicationState
REPLICATION_STATE_REPLICATING: ReplicationState
REPLICATION_STATE_SYNCED_REPLICATION_COMPLETE: ReplicationState
REPLICATION_STATE_RECOVERED: ReplicationState
REPLICATION_STATE_COMMITED: ReplicationState
REPLICATION_STATE_SUSPENDED: ReplicationState
REPLICATION_STATE_CRITICAL: ReplicationState
REPLICATION_STATE_WAITING_TO_COMPLETE_INITIAL_REPLICATION: ReplicationState
REPLICATION_STATE_RESYNCHRONIZING: ReplicationState
REPLICATION_HEALTH_UNSPECIFIED: ReplicationHealth
REPLICATION_HEALTH_NORMAL: ReplicationHealth
REPLICATION_HEALTH_WARNING: ReplicationHealth
REPLICATION_HEALTH_CRITICAL: ReplicationHealth
INITIAL_REPLICATION_METHOD_UNSPECIFIED: InitialReplicationMethod
INITIAL_REPLICATION_METHOD_NETWORK: InitialReplicationMethod
INITIAL_REPLICATION_METHOD_EXTERNAL_MEDIA: InitialReplicationMethod
INITIAL_REPLICATION_METHOD_EXISTING_COPY: InitialReplicationMethod
DISK_FORMAT_UNSPECIFIED: DiskFormat
DISK_FORMAT_VHD: DiskFormat
DISK_FORMAT_RAW: DiskFormat
COMPRESSION_UNSPECIFIED: Compression
COMPRESSION_AUTO: Compression
COMPRESSION_OFF: Compression
COMPRESSION_ZSTD: Compression
CYCLE_KIND_UNSPECIFIED: CycleKind
CYCLE_KIND_INITIAL: CycleKind
CYCLE_KIND_EXPORT: CycleKind
CYCLE_KIND_EXISTING_COPY: CycleKind
CYCLE_KIND_DELTA: CycleKind
CYCLE_KIND_RESYNC: CycleKind
CYCLE_KIND_AWAIT_IMPORT: CycleKind
CYCLE_STATE_UNSPECIFIED: CycleState
CYCLE_STATE_QUEUED: CycleState
CYCLE_STATE_RUNNING: CycleState
CYCLE_STATE_SUCCEEDED: CycleState
CYCLE_STATE_FAILED: CycleState
FAILOVER_STATE_UNSPECIFIED: FailoverState
FAILOVER_STATE_PRIMARY: FailoverState
FAILOVER_STATE_PREPARED: FailoverState
FAILOVER_STATE_REPLICA: FailoverState
FAILOVER_STATE_FAILED_OVER: FailoverState
FAILOVER_STATE_FAILOVER_COMPLETE: FailoverState
CHECK_RESULT_UNSPECIFIED: CheckResult
CHECK_RESULT_PASSED: CheckResult
CHECK_RESULT_FAILED: CheckResult
CHECK_RESULT_SKIPPED: CheckResult
CHUNK_CHECKSUM_UNSPECIFIED: ChunkChecksum
CHUNK_CHECKSUM_BLAKE3: ChunkChecksum
CHUNK_CHECKSUM_XXH3_128: ChunkChecksum

class VmNic(_message.Message):
    __slots__ = ("mac", "vsid", "ca", "failover_ca", "failover_prefix_length", "failover_gateway", "failover_dns", "addresses", "gateway", "dns", "failover_addresses", "test_vsid")
    MAC_FIELD_NUMBER: _ClassVar[int]
    VSID_FIELD_NUMBER: _ClassVar[int]
    CA_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_CA_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_DNS_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    TEST_VSID_FIELD_NUMBER: _ClassVar[int]
    mac: str
    vsid: int
    ca: str
    failover_ca: str
    failover_prefix_length: int
    failover_gateway: str
    failover_dns: _containers.RepeatedScalarFieldContainer[str]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    gateway: str
    dns: _containers.RepeatedScalarFieldContainer[str]
    failover_addresses: _containers.RepeatedScalarFieldContainer[str]
    test_vsid: int
    def __init__(self, mac: _Optional[str] = ..., vsid: _Optional[int] = ..., ca: _Optional[str] = ..., failover_ca: _Optional[str] = ..., failover_prefix_length: _Optional[int] = ..., failover_gateway: _Optional[str] = ..., failover_dns: _Optional[_Iterable[str]] = ..., addresses: _Optional[_Iterable[str]] = ..., gateway: _Optional[str] = ..., dns: _Optional[_Iterable[str]] = ..., failover_addresses: _Optional[_Iterable[str]] = ..., test_vsid: _Optional[int] = ...) -> None: ...

class VmDisk(_message.Message):
    __slots__ = ("name", "path", "format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    format: DiskFormat
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[_Union[DiskFormat, str]] = ...) -> None: ...

class VirtualMachine(_message.Message):
    __slots__ = ("name", "cpu_count", "memory_bytes", "nics", "disks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NICS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_count: int
    memory_bytes: int
    nics: _containers.RepeatedCompositeFieldContainer[VmNic]
    disks: _containers.RepeatedCompositeFieldContainer[VmDisk]
    def __init__(self, name: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., nics: _Optional[_Iterable[_Union[VmNic, _Mapping]]] = ..., disks: _Optional[_Iterable[_Union[VmDisk, _Mapping]]] = ...) -> None: ...

class ReplicationSettings(_message.Message):
    __slots__ = ("frequency_seconds", "additional_recovery_points", "compression", "bandwidth_limit_bytes_per_second", "replica_server", "initial_method", "export_path", "compression_mode")
    FREQUENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_RECOVERY_POINTS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_LIMIT_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REPLICA_SERVER_FIELD_NUMBER: _ClassVar[int]
    INITIAL_METHOD_FIELD_NUMBER: _ClassVar[int]
    EXPORT_PATH_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_MODE_FIELD_NUMBER: _ClassVar[int]
    frequency_seconds: int
    additional_recovery_points: int
    compression: bool
    bandwidth_limit_bytes_per_second: int
    replica_server: str
    initial_method: InitialReplicationMethod
    export_path: str
    compression_mode: Compression
    def __init__(self, frequency_seconds: _Optional[int] = ..., additional_recovery_points: _Optional[int] = ..., compression: _Optional[bool] = ..., bandwidth_limit_bytes_per_second: _Optional[int] = ..., replica_server: _Optional[str] = ..., initial_method: _Optional[_Union[InitialReplicationMethod, str]] = ..., export_path: _Optional[str] = ..., compression_mode: _Optional[_Union[Compression, str]] = ...) -> None: ...

class ReplicationStatistics(_message.Message):
    __slots__ = ("last_sync_unix_nanos", "pending_bytes", "average_delta_bytes", "missed_cycles", "total_cycles", "average_latency_seconds", "progress", "transferred_bytes", "last_cycle_unix_nanos", "last_cycle_bytes", "last_cycle_seconds", "rpo_met")
    LAST_SYNC_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    PENDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_DELTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MISSED_CYCLES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CYCLES_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TRANSFERRED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_CYCLE_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    LAST_CYCLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_CYCLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RPO_MET_FIELD_NUMBER: _ClassVar[int]
    last_sync_unix_nanos: int
    pending_bytes: int
    average_delta_bytes: int
    missed_cycles: int
    total_cycles: int
    average_latency_seconds: float
    progress: float
    transferred_bytes: int
    last_cycle_unix_nanos: int
    last_cycle_bytes: int
    last_cycle_seconds: float
    rpo_met: bool
    def __init__(self, last_sync_unix_nanos: _Optional[int] = ..., pending_bytes: _Optional[int] = ..., average_delta_bytes: _Optional[int] = ..., missed_cycles: _Optional[int] = ..., total_cycles: _Optional[int] = ..., average_latency_seconds: _Optional[float] = ..., progress: _Optional[float] = ..., transferred_bytes: _Optional[int] = ..., last_cycle_unix_nanos: _Optional[int] = ..., last_cycle_bytes: _Optional[int] = ..., last_cycle_seconds: _Optional[float] = ..., rpo_met: _Optional[bool] = ...) -> None: ...

class Replication(_message.Message):
    __slots__ = ("vm", "settings", "state", "health", "health_reasons", "statistics", "resync_required", "last_sequence", "cycle")
    VM_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASONS_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    RESYNC_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    vm: VirtualMachine
    settings: ReplicationSettings
    state: ReplicationState
    health: ReplicationHealth
    health_reasons: _containers.RepeatedScalarFieldContainer[str]
    statistics: ReplicationStatistics
    resync_required: _containers.RepeatedScalarFieldContainer[str]
    last_sequence: int
    cycle: Cycle
    def __init__(self, vm: _Optional[_Union[VirtualMachine, _Mapping]] = ..., settings: _Optional[_Union[ReplicationSettings, _Mapping]] = ..., state: _Optional[_Union[ReplicationState, str]] = ..., health: _Optional[_Union[ReplicationHealth, str]] = ..., health_reasons: _Optional[_Iterable[str]] = ..., statistics: _Optional[_Union[ReplicationStatistics, _Mapping]] = ..., resync_required: _Optional[_Iterable[str]] = ..., last_sequence: _Optional[int] = ..., cycle: _Optional[_Union[Cycle, _Mapping]] = ...) -> None: ...

class Cycle(_message.Message):
    __slots__ = ("vm_name", "id", "state", "kind", "total_bytes", "transferred_bytes", "queue_time_unix_nanos", "start_time_unix_nanos", "end_time_unix_nanos", "sequence", "error_code", "error", "requested")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRANSFERRED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    id: int
    state: CycleState
    kind: CycleKind
    total_bytes: int
    transferred_bytes: int
    queue_time_unix_nanos: int
    start_time_unix_nanos: int
    end_time_unix_nanos: int
    sequence: int
    error_code: str
    error: str
    requested: bool
    def __init__(self, vm_name: _Optional[str] = ..., id: _Optional[int] = ..., state: _Optional[_Union[CycleState, str]] = ..., kind: _Optional[_Union[CycleKind, str]] = ..., total_bytes: _Optional[int] = ..., transferred_bytes: _Optional[int] = ..., queue_time_unix_nanos: _Optional[int] = ..., start_time_unix_nanos: _Optional[int] = ..., end_time_unix_nanos: _Optional[int] = ..., sequence: _Optional[int] = ..., error_code: _Optional[str] = ..., error: _Optional[str] = ..., requested: _Optional[bool] = ...) -> None: ...

class RecoveryPoint(_message.Message):
    __slots__ = ("id", "vm_name", "sequence", "create_time_unix_nanos", "hourly")
    ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    HOURLY_FIELD_NUMBER: _ClassVar[int]
    id: str
    vm_name: str
    sequence: int
    create_time_unix_nanos: int
    hourly: bool
    def __init__(self, id: _Optional[str] = ..., vm_name: _Optional[str] = ..., sequence: _Optional[int] = ..., create_time_unix_nanos: _Optional[int] = ..., hourly: _Optional[bool] = ...) -> None: ...

class StartVmFailoverRequest(_message.Message):
    __slots__ = ("vm_name", "as_test", "prepare", "recovery_point", "force", "leave_off")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    AS_TEST_FIELD_NUMBER: _ClassVar[int]
    PREPARE_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    LEAVE_OFF_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    as_test: bool
    prepare: bool
    recovery_point: int
    force: bool
    leave_off: bool
    def __init__(self, vm_name: _Optional[str] = ..., as_test: _Optional[bool] = ..., prepare: _Optional[bool] = ..., recovery_point: _Optional[int] = ..., force: _Optional[bool] = ..., leave_off: _Optional[bool] = ...) -> None: ...

class StopVmFailoverRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class CompleteVmFailoverRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class SetVmReplicationRequest(_message.Message):
    __slots__ = ("vm_name", "reverse")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    reverse: bool
    def __init__(self, vm_name: _Optional[str] = ..., reverse: _Optional[bool] = ...) -> None: ...

class GetVmFailoverRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ListVmFailoverHistoryRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ListVmFailoverHistoryResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FailoverEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FailoverEvent, _Mapping]]] = ...) -> None: ...

class VmFailover(_message.Message):
    __slots__ = ("vm_name", "state", "test_vm_name", "recovery_point", "test_recovery_point", "peer_endpoint", "warnings", "moved_records", "final_cycle_bytes")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TEST_VM_NAME_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    TEST_RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    PEER_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    MOVED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    FINAL_CYCLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    state: FailoverState
    test_vm_name: str
    recovery_point: int
    test_recovery_point: int
    peer_endpoint: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    moved_records: _containers.RepeatedScalarFieldContainer[str]
    final_cycle_bytes: int
    def __init__(self, vm_name: _Optional[str] = ..., state: _Optional[_Union[FailoverState, str]] = ..., test_vm_name: _Optional[str] = ..., recovery_point: _Optional[int] = ..., test_recovery_point: _Optional[int] = ..., peer_endpoint: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., moved_records: _Optional[_Iterable[str]] = ..., final_cycle_bytes: _Optional[int] = ...) -> None: ...

class FailoverEvent(_message.Message):
    __slots__ = ("time_unix_nanos", "who", "operation", "from_state", "to_state", "recovery_point", "detail")
    TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    time_unix_nanos: int
    who: str
    operation: str
    from_state: FailoverState
    to_state: FailoverState
    recovery_point: int
    detail: str
    def __init__(self, time_unix_nanos: _Optional[int] = ..., who: _Optional[str] = ..., operation: _Optional[str] = ..., from_state: _Optional[_Union[FailoverState, str]] = ..., to_state: _Optional[_Union[FailoverState, str]] = ..., recovery_point: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class EnableReplicationRequest(_message.Message):
    __slots__ = ("vm", "settings")
    VM_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    vm: VirtualMachine
    settings: ReplicationSettings
    def __init__(self, vm: _Optional[_Union[VirtualMachine, _Mapping]] = ..., settings: _Optional[_Union[ReplicationSettings, _Mapping]] = ...) -> None: ...

class GetReplicationRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ListReplicationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReplicationsResponse(_message.Message):
    __slots__ = ("replications",)
    REPLICATIONS_FIELD_NUMBER: _ClassVar[int]
    replications: _containers.RepeatedCompositeFieldContainer[Replication]
    def __init__(self, replications: _Optional[_Iterable[_Union[Replication, _Mapping]]] = ...) -> None: ...

class PauseReplicationRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ResumeReplicationRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ResyncReplicationRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class DisableReplicationRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ReplicateNowRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class WatchCycleRequest(_message.Message):
    __slots__ = ("vm_name", "id")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    id: int
    def __init__(self, vm_name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class ListRecoveryPointsRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ListRecoveryPointsResponse(_message.Message):
    __slots__ = ("recovery_points",)
    RECOVERY_POINTS_FIELD_NUMBER: _ClassVar[int]
    recovery_points: _containers.RepeatedCompositeFieldContainer[RecoveryPoint]
    def __init__(self, recovery_points: _Optional[_Iterable[_Union[RecoveryPoint, _Mapping]]] = ...) -> None: ...

class SetReplicationRequest(_message.Message):
    __slots__ = ("vm_name", "settings", "fields", "resync")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    settings: ReplicationSettings
    fields: _containers.RepeatedScalarFieldContainer[str]
    resync: bool
    def __init__(self, vm_name: _Optional[str] = ..., settings: _Optional[_Union[ReplicationSettings, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ..., resync: _Optional[bool] = ...) -> None: ...

class TestReplicationConnectionRequest(_message.Message):
    __slots__ = ("replica_server", "vm_name")
    REPLICA_SERVER_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    replica_server: str
    vm_name: str
    def __init__(self, replica_server: _Optional[str] = ..., vm_name: _Optional[str] = ...) -> None: ...

class ConnectionCheck(_message.Message):
    __slots__ = ("name", "result", "message", "error_code")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    result: CheckResult
    message: str
    error_code: str
    def __init__(self, name: _Optional[str] = ..., result: _Optional[_Union[CheckResult, str]] = ..., message: _Optional[str] = ..., error_code: _Optional[str] = ...) -> None: ...

class ConnectionTest(_message.Message):
    __slots__ = ("replica_server", "ok", "checks", "dr_site_name", "known_as", "free_bytes", "total_bytes", "needed_bytes")
    REPLICA_SERVER_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    DR_SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    KNOWN_AS_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEEDED_BYTES_FIELD_NUMBER: _ClassVar[int]
    replica_server: str
    ok: bool
    checks: _containers.RepeatedCompositeFieldContainer[ConnectionCheck]
    dr_site_name: str
    known_as: str
    free_bytes: int
    total_bytes: int
    needed_bytes: int
    def __init__(self, replica_server: _Optional[str] = ..., ok: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[ConnectionCheck, _Mapping]]] = ..., dr_site_name: _Optional[str] = ..., known_as: _Optional[str] = ..., free_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., needed_bytes: _Optional[int] = ...) -> None: ...

class DeltaChunk(_message.Message):
    __slots__ = ("disk", "offset", "length", "data", "compressed", "zero", "blake3", "index", "xxh3")
    DISK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    ZERO_FIELD_NUMBER: _ClassVar[int]
    BLAKE3_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    XXH3_FIELD_NUMBER: _ClassVar[int]
    disk: str
    offset: int
    length: int
    data: bytes
    compressed: bool
    zero: bool
    blake3: bytes
    index: int
    xxh3: bytes
    def __init__(self, disk: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., data: _Optional[bytes] = ..., compressed: _Optional[bool] = ..., zero: _Optional[bool] = ..., blake3: _Optional[bytes] = ..., index: _Optional[int] = ..., xxh3: _Optional[bytes] = ...) -> None: ...

class DeltaHeader(_message.Message):
    __slots__ = ("vm_name", "sequence", "resume_from", "disk_sizes", "vm", "full", "cut_time_unix_nanos", "additional_recovery_points", "existing_copy", "primary_endpoint", "planned_failover", "settings")
    class DiskSizesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    DISK_SIZES_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    CUT_TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_RECOVERY_POINTS_FIELD_NUMBER: _ClassVar[int]
    EXISTING_COPY_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PLANNED_FAILOVER_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    sequence: int
    resume_from: int
    disk_sizes: _containers.ScalarMap[str, int]
    vm: VirtualMachine
    full: bool
    cut_time_unix_nanos: int
    additional_recovery_points: int
    existing_copy: bool
    primary_endpoint: str
    planned_failover: bool
    settings: ReplicationSettings
    def __init__(self, vm_name: _Optional[str] = ..., sequence: _Optional[int] = ..., resume_from: _Optional[int] = ..., disk_sizes: _Optional[_Mapping[str, int]] = ..., vm: _Optional[_Union[VirtualMachine, _Mapping]] = ..., full: _Optional[bool] = ..., cut_time_unix_nanos: _Optional[int] = ..., additional_recovery_points: _Optional[int] = ..., existing_copy: _Optional[bool] = ..., primary_endpoint: _Optional[str] = ..., planned_failover: _Optional[bool] = ..., settings: _Optional[_Union[ReplicationSettings, _Mapping]] = ...) -> None: ...

class DeltaMessage(_message.Message):
    __slots__ = ("header", "chunk", "end_of_delta", "chunks")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_OF_DELTA_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    header: DeltaHeader
    chunk: DeltaChunk
    end_of_delta: int
    chunks: DeltaChunks
    def __init__(self, header: _Optional[_Union[DeltaHeader, _Mapping]] = ..., chunk: _Optional[_Union[DeltaChunk, _Mapping]] = ..., end_of_delta: _Optional[int] = ..., chunks: _Optional[_Union[DeltaChunks, _Mapping]] = ...) -> None: ...

class DeltaChunks(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[DeltaChunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[DeltaChunk, _Mapping]]] = ...) -> None: ...

class DeltaAck(_message.Message):
    __slots__ = ("sequence", "recovery_point_id", "chunks_applied")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    recovery_point_id: str
    chunks_applied: int
    def __init__(self, sequence: _Optional[int] = ..., recovery_point_id: _Optional[str] = ..., chunks_applied: _Optional[int] = ...) -> None: ...

class GetReceiverStateRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ImportInitialReplicaRequest(_message.Message):
    __slots__ = ("path", "primary")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    path: str
    primary: str
    def __init__(self, path: _Optional[str] = ..., primary: _Optional[str] = ...) -> None: ...

class ReceiverState(_message.Message):
    __slots__ = ("vm_name", "committed_sequence", "staged_sequence", "staged_chunks", "chunk_checksums")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STAGED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STAGED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    committed_sequence: int
    staged_sequence: int
    staged_chunks: int
    chunk_checksums: _containers.RepeatedScalarFieldContainer[ChunkChecksum]
    def __init__(self, vm_name: _Optional[str] = ..., committed_sequence: _Optional[int] = ..., staged_sequence: _Optional[int] = ..., staged_chunks: _Optional[int] = ..., chunk_checksums: _Optional[_Iterable[_Union[ChunkChecksum, str]]] = ...) -> None: ...

class BlockHashesRequest(_message.Message):
    __slots__ = ("vm_name", "disk", "block_size")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    disk: str
    block_size: int
    def __init__(self, vm_name: _Optional[str] = ..., disk: _Optional[str] = ..., block_size: _Optional[int] = ...) -> None: ...

class BlockHashes(_message.Message):
    __slots__ = ("first_block", "digests")
    FIRST_BLOCK_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    first_block: int
    digests: bytes
    def __init__(self, first_block: _Optional[int] = ..., digests: _Optional[bytes] = ...) -> None: ...

class CheckReplicaServerRequest(_message.Message):
    __slots__ = ("vm_name",)
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    def __init__(self, vm_name: _Optional[str] = ...) -> None: ...

class ReplicaServerCheck(_message.Message):
    __slots__ = ("site_name", "primary", "free_bytes", "total_bytes", "replica_bytes")
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLICA_BYTES_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    primary: str
    free_bytes: int
    total_bytes: int
    replica_bytes: int
    def __init__(self, site_name: _Optional[str] = ..., primary: _Optional[str] = ..., free_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., replica_bytes: _Optional[int] = ...) -> None: ...

class ExportRecoveryPointRequest(_message.Message):
    __slots__ = ("vm_name", "point_id", "disk", "primary")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    POINT_ID_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    point_id: str
    disk: str
    primary: str
    def __init__(self, vm_name: _Optional[str] = ..., point_id: _Optional[str] = ..., disk: _Optional[str] = ..., primary: _Optional[str] = ...) -> None: ...

class RecoveryPointData(_message.Message):
    __slots__ = ("disk", "sequence", "file_bytes", "offset", "data")
    DISK_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    disk: str
    sequence: int
    file_bytes: int
    offset: int
    data: bytes
    def __init__(self, disk: _Optional[str] = ..., sequence: _Optional[int] = ..., file_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AdoptReplicaRequest(_message.Message):
    __slots__ = ("vm_name", "sequence", "disk_sizes", "planned", "primary_endpoint")
    class DiskSizesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DISK_SIZES_FIELD_NUMBER: _ClassVar[int]
    PLANNED_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    sequence: int
    disk_sizes: _containers.ScalarMap[str, int]
    planned: bool
    primary_endpoint: str
    def __init__(self, vm_name: _Optional[str] = ..., sequence: _Optional[int] = ..., disk_sizes: _Optional[_Mapping[str, int]] = ..., planned: _Optional[bool] = ..., primary_endpoint: _Optional[str] = ...) -> None: ...

class AdoptReplicaResponse(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: VirtualMachine
    def __init__(self, vm: _Optional[_Union[VirtualMachine, _Mapping]] = ...) -> None: ...
