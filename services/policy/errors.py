"""The policy service's errors: each subclasses a category of services.common.errors (which picks
the gRPC code). A stored value that is not what its key says is ``services.common.schema.CorruptEntry``."""

from __future__ import annotations

from collections.abc import Mapping

from overland.defaults import RESUME_REVISION, WATCH_BACKLOG_EXCEEDED
from services.common.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
)
from services.common.kv import WatchBacklog


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


class WatchBacklogExceeded(PolicyError, ResourceExhausted):
    """A WatchTable client read nothing for the stall time while its backlog was full: the stream
    ends, and the client watches again from ``revision``, which it has every change up to. The
    revision is also in the status's ErrorInfo, for clients to resume by machine."""

    def __init__(self, revision: int, backlog: WatchBacklog):
        super().__init__(
            f"this watch was ended: its client read nothing for {backlog.stall_seconds:g} s while "
            f"{backlog.max_bytes // 1024} KiB of changes waited for it; it delivered every change up to "
            f"revision {revision}: watch again with start_revision={revision}"
        )
        self.revision = revision

    def error_info(self) -> tuple[str, Mapping[str, str]]:
        return WATCH_BACKLOG_EXCEEDED, {RESUME_REVISION: str(self.revision)}
