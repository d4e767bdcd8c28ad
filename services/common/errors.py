"""The typed exception hierarchy shared by every Overland service, and its one mapping to gRPC status.

Each service package subclasses these categories (for example ``PolicyError``); the category decides
the gRPC status code. ``to_rpc_status`` is the only place where an exception becomes a status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from overland.defaults import ERROR_DOMAIN

# How much of a caller's value an error message may quote: enough to recognize it, never so much that
# a status outgrows gRPC's metadata limit (8 KiB by default) or floods a log line.
EXCERPT_CHARS = 40


def excerpt(value: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """``value`` quoted for an error message: its repr when short, else the repr of its first
    ``limit`` characters (or bytes) and its length."""
    if len(value) <= limit:
        return repr(value)
    unit = "bytes" if isinstance(value, bytes) else "characters"
    return f"{value[:limit]!r}... ({len(value)} {unit})"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as google.rpc.BadRequest reports it."""

    field: str
    description: str


class ServiceError(Exception):
    """Base of every error a service raises on purpose.

    Named apart from the SDK's ``overland.errors.OverlandError``, which is what a client sees.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, violations: tuple[FieldViolation, ...] | list[FieldViolation] = ()):
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)

    def error_info(self) -> tuple[str, Mapping[str, str]] | None:
        """For an error a client acts on by machine, the reason (UPPER_SNAKE_CASE) and metadata of
        the google.rpc.ErrorInfo its status carries; None for the others."""
        return None


class InvalidArgument(ServiceError):
    """The request is malformed: a bad IP, MAC, prefix or out-of-range value."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    """A resource with the same identity (or a unique field) already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    """The request is well formed but the system is not in a state that allows it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ServiceError):
    """An optimistic-concurrency check failed: the caller's revision is stale."""

    code = grpc.StatusCode.ABORTED


class Unavailable(ServiceError):
    """A dependency (etcd, a peer site) cannot be reached in time. Retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    """The operation did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(ServiceError):
    """A quota or capacity ran out, for example a full disk."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(ServiceError):
    """The caller is not allowed to do this, for example an unauthorized primary."""

    code = grpc.StatusCode.PERMISSION_DENIED


class DataLoss(ServiceError):
    """Data arrived or was found corrupted."""

    code = grpc.StatusCode.DATA_LOSS


# A status travels in trailers (grpc-message, grpc-status-details-bin), which a gRPC client refuses
# past its metadata limit (8 KiB by default): whatever an error says, its status stays within these.
MAX_STATUS_MESSAGE_CHARS = 512
MAX_VIOLATION_FIELD_CHARS = 128
MAX_VIOLATION_DESCRIPTION_CHARS = 256
MAX_VIOLATIONS_BYTES = 3072


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded_violations(violations: tuple[FieldViolation, ...]) -> list[FieldViolation]:
    """The violations a status carries: each field and description cut to its limit, and as many
    as fit ``MAX_VIOLATIONS_BYTES`` in all (the first ones: they name the first bad fields)."""
    kept: list[FieldViolation] = []
    total = 0
    for violation in violations:
        field = _cut(violation.field, MAX_VIOLATION_FIELD_CHARS)
        description = _cut(violation.description, MAX_VIOLATION_DESCRIPTION_CHARS)
        total += len(field.encode()) + len(description.encode()) + 8
        if total > MAX_VIOLATIONS_BYTES:
            break
        kept.append(FieldViolation(field, description))
    return kept


def to_rpc_status(error: ServiceError) -> status_pb2.Status:
    """The google.rpc.Status for an error, with BadRequest field violations when it has any and an
    ErrorInfo when it has one (``ServiceError.error_info``); its size is bounded
    (``MAX_STATUS_MESSAGE_CHARS``, ``bounded_violations``) whatever the error holds."""
    status = status_pb2.Status(
        code=_CODE_NUMBERS[error.code], message=_cut(error.message, MAX_STATUS_MESSAGE_CHARS)
    )
    info = error.error_info()
    if info is not None:
        reason, metadata = info
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
        )
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in bounded_violations(error.violations)
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return status


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED: code_pb2.ABORTED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.DATA_LOSS: code_pb2.DATA_LOSS,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
}
