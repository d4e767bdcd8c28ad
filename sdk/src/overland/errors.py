"""Exceptions the SDK raises, one class per gRPC status code, decoded from the server's rich status.

A failed call becomes an ``OverlandError`` subclass chosen by its status code. When the server attached
a google.rpc ``BadRequest`` detail, its field violations are on ``error.field_violations``; when it
attached a google.rpc ``ErrorInfo`` (an error to act on by machine), its reason, domain and metadata
are on ``error.reason``, ``error.domain`` and ``error.metadata``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc
import grpc.aio

from overland._rich_status import MalformedMessage, bad_request_violations, error_infos

# The trailing metadata key that carries a serialized google.rpc.Status (the gRPC rich error model).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. ``lookup_record.mac``) and what is wrong with it."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class OverlandError(Exception):
    """Base of every error the SDK raises. ``code`` is the gRPC status code it came from."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        field_violations: Iterable[FieldViolation] = (),
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field_violations = tuple(field_violations)
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        if not self.field_violations:
            return self.message
        return f"{self.message} ({'; '.join(str(v) for v in self.field_violations)})"


class CancelledError(OverlandError):
    code = grpc.StatusCode.CANCELLED


class UnknownError(OverlandError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(OverlandError):
    """The request is malformed: a bad IP, MAC, prefix, or an out-of-range value."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(OverlandError):
    """The call did not finish within its deadline (the client's timeout)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(OverlandError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(OverlandError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(OverlandError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(OverlandError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(OverlandError):
    """Well formed, but the system's state does not allow it (e.g. an unregistered PA)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(OverlandError):
    """An optimistic-concurrency check failed: the expected revision is stale. Re-read and retry."""

    code = grpc.StatusCode.ABORTED


class OutOfRangeError(OverlandError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(OverlandError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(OverlandError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(OverlandError):
    """The service (or its etcd) cannot be reached. Idempotent calls were already retried."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(OverlandError):
    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(OverlandError):
    code = grpc.StatusCode.UNAUTHENTICATED


class CertificateRefusedError(UnauthenticatedError):
    """The server refused the client's TLS certificate (an unknown CA, an expired or missing one): a
    mistake of the client's configuration, not an outage, so it is never retried."""


class ConfigurationError(OverlandError):
    """The client's own configuration is wrong (a bad endpoint, a missing TLS file); no call was made."""

    code = grpc.StatusCode.INVALID_ARGUMENT


ERROR_CLASSES: dict[grpc.StatusCode, type[OverlandError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def _status_bytes(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def field_violations_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> tuple[FieldViolation, ...]:
    """The BadRequest field violations inside a call's trailing metadata, if the server sent any.

    Details that cannot be decoded are dropped: the call's status code and message still say what
    went wrong."""
    data = _status_bytes(metadata)
    if data is None:
        return ()
    try:
        return tuple(
            FieldViolation(field, description) for field, description in bad_request_violations(data)
        )
    except MalformedMessage:
        return ()


def _error_info(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, Any]:
    """The first ErrorInfo detail as keyword arguments of ``OverlandError`` (none: no arguments).
    Details that cannot be decoded are dropped, as in ``field_violations_from_metadata``."""
    data = _status_bytes(metadata)
    if data is None:
        return {}
    try:
        infos = error_infos(data)
    except MalformedMessage:
        return {}
    if not infos:
        return {}
    return {"reason": infos[0].reason, "domain": infos[0].domain, "metadata": dict(infos[0].metadata)}


def error_from_status(
    code: grpc.StatusCode,
    message: str | None,
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None = None,
) -> OverlandError:
    """The exception for a status code, message and trailing metadata."""
    cls = ERROR_CLASSES.get(code, UnknownError)
    trailing = tuple(trailing_metadata or ())
    return cls(message or code.name, field_violations_from_metadata(trailing), **_error_info(trailing))


class _FailedCall(Protocol):
    """What both a failed sync call (``grpc.Call``) and ``grpc.aio.AioRpcError`` expose."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


def error_from_rpc(error: grpc.RpcError) -> OverlandError:
    """The exception for a failed sync or asyncio call."""
    if not isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return UnknownError(str(error) or type(error).__name__)
    call = cast(_FailedCall, error)
    return error_from_status(call.code(), call.details(), call.trailing_metadata())
