"""Overland client SDK: typed sync and asyncio clients for the policy, vswitch, replica and VM APIs.

``overland.PolicyClient`` and friends block; ``overland.aio.PolicyClient`` and friends are for asyncio.
Failed calls raise ``overland.errors.OverlandError`` subclasses; the ``overland`` CLI (the ``cli``
extra) is built on these. The names below are imported on first use (``overland._lazy``), so that
``import overland`` costs nothing until a client is used.
"""

from typing import TYPE_CHECKING

from overland._lazy import lazy_names

if TYPE_CHECKING:
    from overland.client import PolicyClient as PolicyClient
    from overland.client import ReplicaClient as ReplicaClient
    from overland.client import ReplicaReceiverClient as ReplicaReceiverClient
    from overland.client import VmClient as VmClient
    from overland.client import VswitchClient as VswitchClient
    from overland.config import ClientConfig as ClientConfig
    from overland.config import Endpoint as Endpoint
    from overland.config import Service as Service
    from overland.config import TlsFiles as TlsFiles
    from overland.errors import AbortedError as AbortedError
    from overland.errors import AlreadyExistsError as AlreadyExistsError
    from overland.errors import CertificateRefusedError as CertificateRefusedError
    from overland.errors import ConfigurationError as ConfigurationError
    from overland.errors import DeadlineExceededError as DeadlineExceededError
    from overland.errors import FailedPreconditionError as FailedPreconditionError
    from overland.errors import FieldViolation as FieldViolation
    from overland.errors import InternalError as InternalError
    from overland.errors import InvalidArgumentError as InvalidArgumentError
    from overland.errors import NotFoundError as NotFoundError
    from overland.errors import OverlandError as OverlandError
    from overland.errors import PermissionDeniedError as PermissionDeniedError
    from overland.errors import UnauthenticatedError as UnauthenticatedError
    from overland.errors import UnavailableError as UnavailableError
    from overland.retry import RetryPolicy as RetryPolicy
    from overland.v1.types_pb2 import CustomerRoute as CustomerRoute
    from overland.v1.types_pb2 import LookupRecord as LookupRecord
    from overland.v1.types_pb2 import LookupRule as LookupRule
    from overland.v1.types_pb2 import LookupType as LookupType
    from overland.v1.types_pb2 import ProviderAddress as ProviderAddress
    from overland.v1.types_pb2 import RoutingDomain as RoutingDomain
    from overland.v1.types_pb2 import VirtualSubnet as VirtualSubnet

PUBLIC_NAMES = {
    "overland.client": (
        "PolicyClient",
        "ReplicaClient",
        "ReplicaReceiverClient",
        "VmClient",
        "VswitchClient",
    ),
    "overland.config": ("ClientConfig", "Endpoint", "Service", "TlsFiles"),
    "overland.errors": (
        "AbortedError",
        "AlreadyExistsError",
        "CertificateRefusedError",
        "ConfigurationError",
        "DeadlineExceededError",
        "FailedPreconditionError",
        "FieldViolation",
        "InternalError",
        "InvalidArgumentError",
        "NotFoundError",
        "OverlandError",
        "PermissionDeniedError",
        "UnauthenticatedError",
        "UnavailableError",
    ),
    "overland.retry": ("RetryPolicy",),
    "overland.v1.types_pb2": (
        "CustomerRoute",
        "LookupRecord",
        "LookupRule",
        "LookupType",
        "ProviderAddress",
        "RoutingDomain",
        "VirtualSubnet",
    ),
}
__getattr__ = lazy_names(__name__, PUBLIC_NAMES)
__all__ = [name for names in PUBLIC_NAMES.values() for name in names]
