"""The replica service's errors; each subclasses a category of services.common.errors (the gRPC code)."""

from __future__ import annotations

from services.common.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)


class ReplicaError(ServiceError):
    """Base of the replica service's own errors (mixed into every class below)."""


class InvalidReplicationSettings(ReplicaError, InvalidArgument):
    """EnableReplication (or the service config) carries bad values; ``violations`` names each field."""


class ReplicationNotFound(ReplicaError, NotFound):
    """No replication is enabled for the named VM at this site."""


class ReplicationExists(ReplicaError, AlreadyExists):
    """Replication is already enabled for the VM."""


class InvalidTransition(ReplicaError, FailedPrecondition):
    """The operation is not allowed in the replication's current state (e.g. resume when not paused)."""


class SequenceError(ReplicaError, FailedPrecondition):
    """A delta's sequence number is out of order: a gap, or a delta older than the last committed one."""


class DuplicateDelta(ReplicaError, AlreadyExists):
    """The delta's sequence number is already committed at the DR site."""


class ChunkCorrupted(ReplicaError, DataLoss):
    """A chunk's blake3 does not match its data; the sender resends from ``chunk_index``."""

    def __init__(self, message: str, chunk_index: int):
        super().__init__(message, [FieldViolation("chunk.blake3", message)])
        self.chunk_index = chunk_index


class MalformedDelta(ReplicaError, InvalidArgument):
    """A delta stream breaks the protocol (no header first, chunk out of range, wrong end count)."""


class UnknownVm(ReplicaError, NotFound):
    """The DR site has no replica for this VM and the delta is not a full (initial) transfer."""


class UnauthorizedPrimary(ReplicaError, PermissionDenied):
    """The calling primary is not in the DR site's allow-list."""


class ReplicaStorageFull(ReplicaError, ResourceExhausted):
    """The DR site's storage location has no space left for the delta."""


class ReplicaUnreachable(ReplicaError, Unavailable):
    """The DR site could not be reached (or stopped answering) within the deadline."""


class DrSiteError(ReplicaError):
    """The DR site answered a call with an error no other class here names (INTERNAL, UNKNOWN, ...)."""


class ReplicaLost(ReplicaError, FailedPrecondition):
    """The DR site has no replica of a VM whose initial replication was done; a new one is needed."""


class CycleAborted(ReplicaError, Unavailable):
    """The primary is shutting down; the cycle stopped without committing and runs again after restart."""


class ReplicaStateCorrupted(ReplicaError, DataLoss):
    """Persisted replica state (journal, recovery point, state file) is unreadable."""


class UnknownRecoveryPoint(ReplicaError, NotFound):
    """The VM has no such recovery point at this site (it was never taken, or retention dropped it)."""


class ReplicaDiskMissing(ReplicaError, FailedPrecondition):
    """A disk of the replica is missing at the DR site, so the VM cannot run there."""


class DeltasRefused(ReplicaError, FailedPrecondition):
    """The DR site refuses deltas for the VM: it failed over there (or is the VM's primary now)."""


class IllegalFailover(ReplicaError, FailedPrecondition):
    """A failover operation the VM's failover state does not allow; the message names the state."""


class PrimaryAnswers(ReplicaError, FailedPrecondition):
    """An unplanned failover while the primary site still answers (``force`` overrides it)."""


class HostNotRegistered(ReplicaError, FailedPrecondition):
    """This site's host has no PA registered with the policy service: the network cannot follow the VM."""


class PeerUnavailable(ReplicaError, Unavailable):
    """The other site (or the policy service) did not answer a failover's call."""
