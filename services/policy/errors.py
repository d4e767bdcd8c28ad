"""The policy service's errors: each subclasses a category of services.common.errors (which picks
the gRPC code). A stored value that is not what its key says is ``services.common.schema.CorruptEntry``."""

from __future__ import annotations

from services.common.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
)


class PolicyError(ServiceError):
    """Base of the policy service's own errors (mixed into every class below)."""


class InvalidPolicy(PolicyError, InvalidArgument):
    """A request carries a bad IP, MAC, prefix, VSID or other value; ``violations`` names each field."""


class ResourceNotFound(PolicyError, NotFound):
    """The routing domain, subnet, provider address, record or route does not exist."""


class ResourceExists(PolicyError, AlreadyExists):
    """The resource, or a unique field of it (a CA or MAC within a VSID), is already taken."""


class PolicyConflict(PolicyError, FailedPrecondition):
    """The table's state forbids the write: an unknown PA or VSID, overlapping subnets, or a
    resource that others still depend on."""


class StaleRevision(PolicyError, Aborted):
    """``expected_revision`` does not match, or the write lost too many races to retry."""
