"""Code shared by the Overland services: errors, gRPC server plumbing, logging, the etcd interface, the
routing table's data model (``services.common.schema``) and the routing table core."""

import importlib
from typing import TYPE_CHECKING, Any

from services.common.clock import SYSTEM_CLOCK, Clock
from services.common.config import (
    ConfigError,
    EtcdConfig,
    EtcdCredentials,
    LogConfig,
    ServerConfig,
    TelemetryConfig,
)
from services.common.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    excerpt,
    to_rpc_status,
)
from services.common.kv import (
    KV,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    Get,
    KeyValue,
    KVAuthenticationError,
    KVCompactedError,
    KVConflictError,
    KVLeaseNotFoundError,
    KVPermissionDeniedError,
    KVRequestError,
    KVTooManyOpsError,
    KVUnavailableError,
    KVWatchOverflowError,
    Lease,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchBatch,
    WatchEvent,
    WatchStream,
    prefix_end,
)
from services.common.logs import configure_logging
from services.common.routing import NextHop, RoutingError, select_next_hop
from services.common.schema import (
    CorruptEntry,
    decode_entry,
    decode_snapshot,
    key_of,
    read_entry,
    wrap,
)
from services.common.table import EntryChange, RoutingTable, TableChange, TableDelta

if TYPE_CHECKING:
    from services.common.clock import ManualClock
    from services.common.etcd_auth import EtcdAccess, access_plan
    from services.common.etcd_kv import (
        EtcdKV,
    )
    from services.common.etcd_messages import KVServerError, KVSpaceExceededError
    from services.common.etcd_process import (
        EtcdProcess,
        EtcdProcessError,
        EtcdUsers,
        free_ports,
    )
    from services.common.etcd_watch import EtcdWatch
    from services.common.memory_kv import (
        MemoryKV,
        MemoryWatch,
    )
    from services.common.server import (
        BehaviorInterceptor,
        ErrorMappingInterceptor,
        GrpcServer,
        StreamSlotInterceptor,
        StreamSlots,
        build_server,
        rewrap_handler,
        wait_for_signal,
    )

# Imported on first use: these pull in the etcd and gRPC server stacks, which a process that needs only
# the table or the errors (a restarting vswitch datapath) should not pay for at start.
_LAZY = {
    "EtcdKV": "services.common.etcd_kv",
    "EtcdWatch": "services.common.etcd_watch",
    "KVServerError": "services.common.etcd_messages",
    "KVSpaceExceededError": "services.common.etcd_messages",
    "EtcdAccess": "services.common.etcd_auth",
    "access_plan": "services.common.etcd_auth",
    "EtcdProcess": "services.common.etcd_process",
    "EtcdUsers": "services.common.etcd_process",
    "EtcdProcessError": "services.common.etcd_process",
    "free_ports": "services.common.etcd_process",
    "ManualClock": "services.common.clock",
    "MemoryKV": "services.common.memory_kv",
    "MemoryWatch": "services.common.memory_kv",
    "BehaviorInterceptor": "services.common.server",
    "ErrorMappingInterceptor": "services.common.server",
    "GrpcServer": "services.common.server",
    "StreamSlotInterceptor": "services.common.server",
    "StreamSlots": "services.common.server",
    "build_server": "services.common.server",
    "rewrap_handler": "services.common.server",
    "wait_for_signal": "services.common.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'services.common' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "KV",
    "SYSTEM_CLOCK",
    "Aborted",
    "AlreadyExists",
    "BehaviorInterceptor",
    "Clock",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "ConfigError",
    "CorruptEntry",
    "DataLoss",
    "DeadlineExceeded",
    "Delete",
    "EntryChange",
    "ErrorMappingInterceptor",
    "EtcdAccess",
    "EtcdConfig",
    "EtcdCredentials",
    "EtcdKV",
    "EtcdProcess",
    "EtcdProcessError",
    "EtcdUsers",
    "EtcdWatch",
    "EventType",
    "FailedPrecondition",
    "FieldViolation",
    "Get",
    "GrpcServer",
    "InvalidArgument",
    "KVAuthenticationError",
    "KVCompactedError",
    "KVConflictError",
    "KVLeaseNotFoundError",
    "KVPermissionDeniedError",
    "KVRequestError",
    "KVServerError",
    "KVSpaceExceededError",
    "KVTooManyOpsError",
    "KVUnavailableError",
    "KVWatchOverflowError",
    "KeyValue",
    "Lease",
    "LogConfig",
    "ManualClock",
    "MemoryKV",
    "MemoryWatch",
    "NextHop",
    "NotFound",
    "Op",
    "PermissionDenied",
    "Put",
    "RangeResult",
    "ResourceExhausted",
    "RoutingError",
    "RoutingTable",
    "ServerConfig",
    "ServiceError",
    "StreamSlotInterceptor",
    "StreamSlots",
    "TableChange",
    "TableDelta",
    "TelemetryConfig",
    "TxnResult",
    "Unavailable",
    "WatchBatch",
    "WatchEvent",
    "WatchStream",
    "access_plan",
    "build_server",
    "configure_logging",
    "decode_entry",
    "decode_snapshot",
    "excerpt",
    "free_ports",
    "key_of",
    "prefix_end",
    "read_entry",
    "rewrap_handler",
    "select_next_hop",
    "to_rpc_status",
    "wait_for_signal",
    "wrap",
]
