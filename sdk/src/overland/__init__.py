"""Overland client SDK: typed sync and asyncio clients for the policy, vswitch and replica APIs.

``overland.PolicyClient`` and friends block; ``overland.aio.PolicyClient`` and friends are for asyncio.
Failed calls raise ``overland.errors.OverlandError`` subclasses; the ``overland`` CLI is built on these.
"""

from overland.client import PolicyClient, ReplicaClient, ReplicaReceiverClient, VswitchClient
from overland.config import ClientConfig, Endpoint, Service, TlsFiles
from overland.errors import (
    AbortedError,
    AlreadyExistsError,
    ConfigurationError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OverlandError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from overland.retry import RetryPolicy
from overland.v1.types_pb2 import (
    CustomerRoute,
    LookupRecord,
    LookupRule,
    LookupType,
    ProviderAddress,
    RoutingDomain,
    VirtualSubnet,
)

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "ClientConfig",
    "ConfigurationError",
    "CustomerRoute",
    "DeadlineExceededError",
    "Endpoint",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "LookupRecord",
    "LookupRule",
    "LookupType",
    "NotFoundError",
    "OverlandError",
    "PermissionDeniedError",
    "PolicyClient",
    "ProviderAddress",
    "ReplicaClient",
    "ReplicaReceiverClient",
    "RetryPolicy",
    "RoutingDomain",
    "Service",
    "TlsFiles",
    "UnauthenticatedError",
    "UnavailableError",
    "VirtualSubnet",
    "VswitchClient",
]
