"""The narrow key-value interface the services use instead of etcd directly.

``EtcdKV`` (services/common/etcd_kv.py) implements it over a real etcd with a deadline on every
call; ``MemoryKV`` (services/common/memory_kv.py) is an in-memory fake with the same MVCC
semantics (revisions, compaction, watch) for fast unit tests. Keys and values are bytes; helpers
accept ``str`` keys and encode them as UTF-8.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)


class KVUnavailableError(Unavailable):
    """etcd could not be reached, or did not answer within the call's deadline."""


class KVCompactedError(FailedPrecondition):
    """A read or watch asked for a revision that compaction has removed."""

    def __init__(self, message: str, compact_revision: int):
        super().__init__(message)
        self.compact_revision = compact_revision


class KVWatchOverflowError(ResourceExhausted):
    """A watch's consumer stopped taking while its backlog was full (see ``WatchBacklog``): the watch
    dropped what it held and ended. ``revision`` is the last one it delivered; watch again from
    ``revision + 1``."""

    def __init__(self, message: str, revision: int):
        super().__init__(message)
        self.revision = revision


class KVTooManyOpsError(InvalidArgument):
    """A transaction holds more operations than the store accepts (etcd --max-txn-ops, 128 by default)."""


class KVConflictError(Aborted):
    """A transaction's compares failed where the caller expected them to hold."""


class KVRequestError(InvalidArgument):
    """The store rejected a malformed request: an empty key, the same key twice in one transaction,
    a revision in the future."""


class KVLeaseNotFoundError(NotFound):
    """A put or revoke named a lease that does not exist (never granted, expired or revoked)."""


# The two below are the service's own misconfiguration, not its caller's fault: they map to INTERNAL
# (the message names the endpoint and the user; docs/security.md lists each role's prefixes).
class KVPermissionDeniedError(ServiceError):
    """The store refused the service's user this request: its roles do not cover these keys."""


class KVAuthenticationError(ServiceError):
    """The store did not accept the service's credentials (an unknown user or a wrong password), or
    wanted credentials the service was not given."""


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class CompareTarget(enum.Enum):
    VALUE = "value"
    VERSION = "version"
    CREATE = "create"
    MOD = "mod"


class CompareOp(enum.Enum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"


# A bulk load builds these once per key. The op types are slotted dataclasses, not frozen ones (a
# frozen dataclass costs 3x as much to build): treat them as values. Enum members are properties in
# Python 3.11, several times slower to read than a global.
_VERSION, _MOD, _VALUE = CompareTarget.VERSION, CompareTarget.MOD, CompareTarget.VALUE
_EQUAL, _GREATER = CompareOp.EQUAL, CompareOp.GREATER


@dataclass(slots=True)
class Compare:
    """One transaction guard. ``Compare.absent(key)`` is the usual "create only" guard (version == 0).

    With ``prefix`` set it guards every key that starts with ``key`` (etcd's range compare): it holds
    when it holds for each of them, and, when there are none, for an absent key."""

    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: int | bytes
    prefix: bool = False

    @classmethod
    def absent(cls, key: bytes) -> Compare:
        return cls(key, _VERSION, _EQUAL, 0)

    @classmethod
    def exists(cls, key: bytes) -> Compare:
        return cls(key, _VERSION, _GREATER, 0)

    @classmethod
    def mod_revision_is(cls, key: bytes, revision: int) -> Compare:
        return cls(key, _MOD, _EQUAL, revision)

    @classmethod
    def value_is(cls, key: bytes, value: bytes) -> Compare:
        return cls(key, _VALUE, _EQUAL, value)

    @classmethod
    def unchanged_since(cls, prefix: bytes, revision: int) -> Compare:
        """No key under ``prefix`` was written after ``revision`` (keys deleted since go unseen)."""
        return cls(prefix, _MOD, CompareOp.LESS, revision + 1, prefix=True)


@dataclass(slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(slots=True)
class Delete:
    """Deletes ``key``; with ``prefix`` set, every key that starts with it."""

    key: bytes
    prefix: bool = False


@dataclass(slots=True)
class Get:
    """A read inside a transaction (etcd RequestRange)."""

    key: bytes
    prefix: bool = False


Op = Put | Delete | Get


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One entry per op of the branch that ran; for a ``Get`` the key-values it read, else ().
    responses: tuple[tuple[KeyValue, ...], ...] = ()


@dataclass(frozen=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    # Whether more keys matched than ``limit`` allowed.
    more: bool
    # The store revision the read was served at.
    revision: int
    count: int = 0


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    kv: KeyValue
    # For a DELETE, the value before it when the watch asked for prev_kv.
    prev_kv: KeyValue | None = None


@dataclass(frozen=True)
class WatchBatch:
    """What one watch response brings: events (maybe none, for a progress notification) and the
    store revision the watcher is now guaranteed to have seen up to: every matching event at or
    below ``revision`` has been delivered, so a broken watch resumes from ``revision + 1``. The
    events of one revision (one transaction) always arrive in the same batch."""

    events: tuple[WatchEvent, ...]
    revision: int
    progress: bool = False


@dataclass(frozen=True)
class WatchBacklog:
    """What a watch holds for a consumer that does not keep up, and how long it waits for one that
    stopped: with ``max_bytes`` of events received and not yet delivered, the watch stops reading
    (the store holds the rest, as etcd does for any slow watcher); if the consumer then takes nothing
    for ``stall_seconds``, the watch drops what it holds and iterating raises ``KVWatchOverflowError``.

    A consumer that reads at any pace is never ended (a watch catching up from an old revision fills
    its backlog at once, and drains it as fast as its consumer reads); one that stopped costs at most
    ``max_bytes`` (one event batch more when a single one is larger)."""

    max_bytes: int
    stall_seconds: float


class WatchStream(Protocol):
    """An open watch. Iterating yields batches; it raises ``KVCompactedError`` when the start
    revision was compacted, ``KVUnavailableError`` when the stream breaks and ``KVWatchOverflowError``
    when its consumer stopped taking with a full backlog. ``cancel`` ends it from another thread."""

    def __iter__(self) -> Iterator[WatchBatch]: ...

    def cancel(self) -> None: ...

    def request_progress(self) -> None:
        """Ask for a progress batch now (etcd WatchProgressRequest) instead of waiting for the
        periodic one; it arrives once the watcher has caught up."""
        ...


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


class KV(Protocol):
    """What the services need of etcd, and nothing more."""

    max_txn_ops: int

    def get(self, key: bytes) -> KeyValue | None: ...

    def range(
        self,
        prefix: bytes,
        *,
        start: bytes | None = None,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeResult:
        """Keys starting with ``prefix`` from ``start`` (inclusive) on, in key order, at ``revision``
        (0 = latest)."""
        ...

    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult: ...

    def current_revision(self) -> int: ...

    def grant_lease(self, ttl: int) -> Lease: ...

    def refresh_lease(self, lease_id: int) -> int:
        """Keep the lease alive once; returns the remaining TTL (0 or less: the lease is gone)."""
        ...

    def revoke_lease(self, lease_id: int, *, timeout: float | None = None) -> None:
        """``timeout``: a deadline shorter than the client's, for a best-effort revoke on the way out."""
        ...

    def compact(self, revision: int) -> None: ...

    def watch(
        self,
        prefix: bytes,
        start_revision: int,
        *,
        prev_kv: bool = False,
        backlog: WatchBacklog | None = None,
    ) -> WatchStream:
        """Watch ``prefix`` from ``start_revision`` (inclusive), with progress notifications.

        ``backlog``: bounds what the watch holds for its consumer (see ``WatchBacklog``); None: no
        bound, for a consumer that always reads (the vswitch agent)."""
        ...

    def close(self) -> None: ...


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's range_end)."""
    trimmed = bytearray(prefix)
    while trimmed and trimmed[-1] == 0xFF:
        trimmed.pop()
    if not trimmed:
        return b"\0"
    trimmed[-1] += 1
    return bytes(trimmed)
