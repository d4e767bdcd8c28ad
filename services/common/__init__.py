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
from services.common.etcd_process import EtcdProcess, EtcdProcessError
from services.common.logs import configure_logging
from services.common.server import (
    ErrorMappingInterceptor,
    GrpcServer,
    ServerConfig,
    TlsConfig,
    build_server,
    wait_for_signal,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorMappingInterceptor",
    "EtcdProcess",
    "EtcdProcessError",
    "FailedPrecondition",
    "FieldViolation",
    "GrpcServer",
    "InvalidArgument",
    "NotFound",
    "OverlandError",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerConfig",
    "TlsConfig",
    "Unavailable",
    "build_server",
    "configure_logging",
    "to_rpc_status",
    "wait_for_signal",
]
