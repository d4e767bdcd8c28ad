"""Code shared by the Overland services: errors, gRPC server plumbing, logging and the etcd interface."""

from services.common.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OverlandError,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    to_rpc_status,
)
from services.common.etcd_kv import EtcdConfig, EtcdKV, EtcdTlsConfig, EtcdWatch
from services.common.etcd_process import EtcdProcess, EtcdProcessError
from services.common.logs import configure_logging
from services.common.memory_kv import ManualClock, MemoryKV
from services.common.routing import NextHop, RoutingError, select_next_hop
from services.common.server import (
    ErrorMappingInterceptor,
    GrpcServer,
    ServerConfig,
    TlsConfig,
    build_server,
    wait_for_signal,
)
from services.common.table import (
    EntryChange,
    RoutingTable,
    TableChange,
    TableDelta,
    TableError,
    decode_entry,
    decode_snapshot,
    key_of,
    wrap,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DataLoss",
    "DeadlineExceeded",
    "EntryChange",
    "ErrorMappingInterceptor",
    "EtcdConfig",
    "EtcdKV",
    "EtcdProcess",
    "EtcdProcessError",
    "EtcdTlsConfig",
    "EtcdWatch",
    "FailedPrecondition",
    "FieldViolation",
    "GrpcServer",
    "InvalidArgument",
    "ManualClock",
    "MemoryKV",
    "NextHop",
    "NotFound",
    "OverlandError",
    "PermissionDenied",
    "ResourceExhausted",
    "RoutingError",
    "RoutingTable",
    "ServerConfig",
    "TableChange",
    "TableDelta",
    "TableError",
    "TlsConfig",
    "Unavailable",
    "build_server",
    "configure_logging",
    "decode_entry",
    "decode_snapshot",
    "key_of",
    "select_next_hop",
    "to_rpc_status",
    "wait_for_signal",
    "wrap",
]
