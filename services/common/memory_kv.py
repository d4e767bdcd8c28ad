"""An in-memory ``KV`` with etcd's MVCC semantics, for fast unit tests of code that uses etcd.

It keeps what etcd keeps: one global revision bumped once per writing transaction, create/mod
revision and version per key, the history of every key (so reads at a past revision and watches
from an old revision replay exactly), compaction (reads and watches below it raise
``KVCompactedError``), leases that expire on an injectable clock, transaction limits
(``max_txn_ops``, duplicate keys) and progress notifications.

Tests can also make it fail like a lost etcd: ``set_available(False)`` makes every call raise
``KVUnavailableError`` and breaks open watches; ``break_watches()`` breaks only the watch streams,
so watch-loop code can be tested for resume. A watch with a ``backlog`` ends as an etcd one does:
when its consumer takes nothing for the stall time while more than the limit waits for it.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from services.common.kv import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    Get,
    KeyValue,
    KVCompactedError,
    KVLeaseNotFoundError,
    KVRequestError,
    KVTooManyOpsError,
    KVUnavailableError,
    KVWatchOverflowError,
    Lease,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchBacklog,
    WatchBatch,
    WatchEvent,
    prefix_end,
)

# etcd sends a catching-up watcher at most this many revisions per response (watchBatchMaxRevs).
_MAX_BATCH_REVISIONS = 1000
# The first lease id handed out; etcd's are arbitrary positive int64s, tests only compare them.
_FIRST_LEASE_ID = 0x7E570000


@dataclass
class _LeaseState:
    ttl: int
    expires_at: float
    keys: set[bytes] = field(default_factory=set)


def key_range(prefix: bytes, start: bytes | None = None) -> tuple[bytes, bytes | None]:
    """The ``[low, high)`` interval of keys that start with ``prefix`` and are ``>= start``;
    ``high`` is None when the interval is unbounded (the empty prefix)."""
    low = max(prefix, start) if start is not None else prefix
    return low, (prefix_end(prefix) if prefix else None)


def _in_range(key: bytes, low: bytes, high: bytes | None) -> bool:
    return key >= low and (high is None or key < high)


def compare_holds(compare: Compare, current: KeyValue | None) -> bool:
    """Whether one transaction guard holds for the key's current value (None: the key is absent).

    As in etcd, an absent key has version, create and mod revision 0, and no value compare holds.
    """
    if compare.target is CompareTarget.VALUE:
        if current is None:
            return False
        actual: int | bytes = current.value
    elif compare.target is CompareTarget.VERSION:
        actual = current.version if current else 0
    elif compare.target is CompareTarget.CREATE:
        actual = current.create_revision if current else 0
    else:
        actual = current.mod_revision if current else 0
    operand = compare.operand
    if isinstance(actual, bytes) != isinstance(operand, bytes):
        raise KVRequestError(f"compare on {compare.target.value} needs a {type(actual).__name__} operand")
    if compare.op is CompareOp.EQUAL:
        return actual == operand
    if compare.op is CompareOp.NOT_EQUAL:
        return actual != operand
    if compare.op is CompareOp.LESS:
        return actual < operand  # type: ignore[operator]
    return actual > operand  # type: ignore[operator]


def check_txn_ops(ops: Sequence[Op], max_txn_ops: int) -> None:
    """etcd's own checks of one transaction branch: the ops limit and no key written twice."""
    if len(ops) > max_txn_ops:
        raise KVTooManyOpsError(f"too many operations in txn request ({len(ops)} > {max_txn_ops})")
    put_keys: set[bytes] = set()
    for op in ops:
        if not op.key and not (isinstance(op, Delete | Get) and op.prefix):
            raise KVRequestError("key is not provided")
        if isinstance(op, Put):
            if op.key in put_keys:
                raise KVRequestError("duplicate key given in txn request")
            put_keys.add(op.key)
    for op in ops:
        if isinstance(op, Delete):
            low, high = key_range(op.key) if op.prefix else (op.key, op.key + b"\0")
            if any(_in_range(key, low, high) for key in put_keys):
                raise KVRequestError("duplicate key given in txn request")


class MemoryWatch:
    """One open watch on a ``MemoryKV``; see ``WatchStream``."""

    def __init__(
        self,
        store: MemoryKV,
        prefix: bytes,
        next_revision: int,
        prev_kv: bool,
        backlog: WatchBacklog | None = None,
    ):
        self.prefix = prefix
        self.backlog = backlog
        # When a write found the backlog full since the consumer's last take (see ``WatchBacklog``).
        self.full_since: float | None = None
        self.low, self.high = key_range(prefix)
        self.next_revision = next_revision
        self.prev_kv = prev_kv
        self.cancelled = False
        self.broken = False
        self.progress_requested = False
        self.last_sent = time.monotonic()
        self._store = store

    def __iter__(self) -> MemoryWatch:
        # Its own iterator, like EtcdWatch: consecutive loops continue the same stream.
        return self

    def __next__(self) -> WatchBatch:
        try:
            batch = self._store._next_batch(self)
        except BaseException:
            self._store._forget(self)
            raise
        if batch is None:
            self._store._forget(self)
            raise StopIteration
        return batch

    def cancel(self) -> None:
        self._store._signal(self, "cancelled")

    def break_stream(self) -> None:
        """Make the stream fail as a broken connection would: iterating raises KVUnavailableError."""
        self._store._signal(self, "broken")

    def request_progress(self) -> None:
        self._store._signal(self, "progress_requested")


class MemoryKV:
    """An in-memory, thread-safe ``KV`` with etcd's MVCC semantics (see the module docstring)."""

    def __init__(
        self,
        *,
        max_txn_ops: int = 128,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float | None = 0.5,
    ):
        self.max_txn_ops = max_txn_ops
        self.progress_interval = progress_interval
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._revision = 1
        self._compacted = 0
        # Every key ever written, sorted, and its history: (revision, value or None for a delete).
        self._keys: list[bytes] = []
        self._history: dict[bytes, list[tuple[int, KeyValue | None]]] = {}
        # Every event since the compaction point, in revision order, for watch replay.
        self._event_revisions: list[int] = []
        self._events: list[WatchEvent] = []
        self._leases: dict[int, _LeaseState] = {}
        self._lease_ids = itertools.count(_FIRST_LEASE_ID)
        self._watches: set[MemoryWatch] = set()
        self._available = True
        self._closed = False

    # -- failure injection ---------------------------------------------------------------------

    def set_available(self, available: bool) -> None:
        """Simulate losing etcd (every call raises KVUnavailableError, watches break) or getting it back."""
        with self._cond:
            self._available = available
            if not available:
                for watch in self._watches:
                    watch.broken = True
            self._cond.notify_all()

    def break_watches(self) -> None:
        """Break every open watch stream; calls keep working (a dropped watch connection)."""
        with self._cond:
            for watch in self._watches:
                watch.broken = True
            self._cond.notify_all()

    def expire_leases(self) -> None:
        """Revoke leases whose time has passed (every call does it; tests with a manual clock too)."""
        with self._cond:
            self._expire_leases()

    @property
    def compact_revision(self) -> int:
        with self._cond:
            return self._compacted

    @property
    def open_watches(self) -> int:
        with self._cond:
            return len(self._watches)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: bytes) -> KeyValue | None:
        with self._cond:
            self._enter()
            return self._latest(key)

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
        if limit < 0:
            raise KVRequestError("limit must not be negative")
        with self._cond:
            self._enter()
            at = self._check_read_revision(revision)
            low, high = key_range(prefix, start)
            found = [kv for kv in self._scan(low, high, at) if kv is not None]
            count = len(found)
            if count_only:
                return RangeResult(kvs=(), more=False, revision=self._revision, count=count)
            page = found[:limit] if limit else found
            if keys_only:
                page = [replace(kv, value=b"") for kv in page]
            return RangeResult(
                kvs=tuple(page), more=bool(limit) and count > limit, revision=self._revision, count=count
            )

    def current_revision(self) -> int:
        with self._cond:
            self._enter()
            return self._revision

    # -- writes --------------------------------------------------------------------------------

    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        if len(compares) > self.max_txn_ops:
            raise KVTooManyOpsError(
                f"too many operations in txn request ({len(compares)} > {self.max_txn_ops})"
            )
        check_txn_ops(success, self.max_txn_ops)
        check_txn_ops(failure, self.max_txn_ops)
        with self._cond:
            self._enter()
            succeeded = all(self._holds(compare) for compare in compares)
            ops = success if succeeded else failure
            for op in ops:
                if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                    raise KVLeaseNotFoundError(f"requested lease not found: {op.lease}")
            revision = self._revision + 1
            responses: list[tuple[KeyValue, ...]] = []
            changed = False
            for op in ops:
                if isinstance(op, Get):
                    low, high = key_range(op.key) if op.prefix else (op.key, op.key + b"\0")
                    responses.append(tuple(kv for kv in self._scan(low, high, revision) if kv is not None))
                    continue
                if isinstance(op, Put):
                    self._put(op, revision)
                    changed = True
                else:
                    changed = self._delete(op, revision) or changed
                responses.append(())
            if changed:
                self._commit(revision)
            return TxnResult(succeeded=succeeded, revision=self._revision, responses=tuple(responses))

    def compact(self, revision: int) -> None:
        with self._cond:
            self._enter()
            if revision <= self._compacted:
                raise KVCompactedError(
                    f"required revision has been compacted (compacted at {self._compacted})", self._compacted
                )
            if revision > self._revision:
                raise KVRequestError(f"required revision {revision} is a future revision")
            self._compacted = revision
            for key, history in self._history.items():
                # Keep the value the key had at the compaction point, drop everything older.
                index = bisect.bisect_right(history, revision, key=lambda entry: entry[0])
                kept = history[index - 1 : index] if index and history[index - 1][1] is not None else []
                self._history[key] = kept + history[index:]
            self._keys = [key for key in self._keys if self._history[key]]
            self._history = {key: self._history[key] for key in self._keys}
            cut = bisect.bisect_left(self._event_revisions, revision)
            del self._event_revisions[:cut]
            del self._events[:cut]
            self._cond.notify_all()

    # -- leases --------------------------------------------------------------------------------

    def grant_lease(self, ttl: int) -> Lease:
        if ttl < 1:
            raise KVRequestError("lease TTL must be at least 1 second")
        with self._cond:
            self._enter()
            lease_id = next(self._lease_ids)
            self._leases[lease_id] = _LeaseState(ttl=ttl, expires_at=self._clock() + ttl)
            return Lease(id=lease_id, ttl=ttl)

    def refresh_lease(self, lease_id: int) -> int:
        with self._cond:
            self._enter()
            lease = self._leases.get(lease_id)
            if lease is None:
                return 0
            lease.expires_at = self._clock() + lease.ttl
            return lease.ttl

    def revoke_lease(self, lease_id: int, *, timeout: float | None = None) -> None:
        with self._cond:
            self._enter()
            if lease_id not in self._leases:
                raise KVLeaseNotFoundError(f"requested lease not found: {lease_id}")
            self._revoke(lease_id)

    # -- watch ---------------------------------------------------------------------------------

    def watch(
        self,
        prefix: bytes,
        start_revision: int,
        *,
        prev_kv: bool = False,
        backlog: WatchBacklog | None = None,
    ) -> MemoryWatch:
        with self._cond:
            self._enter()
            # As in etcd, revision 0 means "from now on".
            next_revision = start_revision if start_revision > 0 else self._revision + 1
            watch = MemoryWatch(self, prefix, next_revision, prev_kv, backlog)
            self._watches.add(watch)
            return watch

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for watch in self._watches:
                watch.cancelled = True
            self._cond.notify_all()

    # -- internals (callers hold the lock) -----------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise KVUnavailableError("the store is closed")
        if not self._available:
            raise KVUnavailableError("the store is unavailable")
        self._expire_leases()

    def _check_read_revision(self, revision: int) -> int:
        if revision <= 0:
            return self._revision
        if revision < self._compacted:
            raise KVCompactedError(
                f"required revision {revision} has been compacted (compacted at {self._compacted})",
                self._compacted,
            )
        if revision > self._revision:
            raise KVRequestError(f"required revision {revision} is a future revision")
        return revision

    def _at(self, key: bytes, revision: int) -> KeyValue | None:
        history = self._history.get(key)
        if not history:
            return None
        index = bisect.bisect_right(history, revision, key=lambda entry: entry[0])
        return history[index - 1][1] if index else None

    def _holds(self, compare: Compare) -> bool:
        if not compare.prefix:
            return compare_holds(compare, self._latest(compare.key))
        low, high = key_range(compare.key)
        found = [kv for kv in self._scan(low, high, self._revision) if kv is not None]
        if not found:
            return compare.target is not CompareTarget.VALUE and compare_holds(compare, None)
        return all(compare_holds(compare, kv) for kv in found)

    def _latest(self, key: bytes) -> KeyValue | None:
        history = self._history.get(key)
        return history[-1][1] if history else None

    def _scan(self, low: bytes, high: bytes | None, revision: int) -> Iterator[KeyValue | None]:
        first = bisect.bisect_left(self._keys, low)
        last = len(self._keys) if high is None else bisect.bisect_left(self._keys, high)
        for key in self._keys[first:last]:
            yield self._at(key, revision)

    def _record(self, key: bytes, revision: int, kv: KeyValue | None, event: WatchEvent) -> None:
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = []
            bisect.insort(self._keys, key)
        history.append((revision, kv))
        self._event_revisions.append(revision)
        self._events.append(event)

    def _put(self, op: Put, revision: int) -> None:
        previous = self._latest(op.key)
        if previous is not None and previous.lease and previous.lease in self._leases:
            self._leases[previous.lease].keys.discard(op.key)
        kv = KeyValue(
            key=op.key,
            value=op.value,
            create_revision=previous.create_revision if previous else revision,
            mod_revision=revision,
            version=previous.version + 1 if previous else 1,
            lease=op.lease,
        )
        if op.lease:
            self._leases[op.lease].keys.add(op.key)
        self._record(op.key, revision, kv, WatchEvent(EventType.PUT, kv, previous))

    def _delete(self, op: Delete, revision: int) -> bool:
        low, high = key_range(op.key) if op.prefix else (op.key, op.key + b"\0")
        doomed = [kv for kv in self._scan(low, high, revision) if kv is not None]
        for previous in doomed:
            if previous.lease in self._leases:
                self._leases[previous.lease].keys.discard(previous.key)
            tombstone = KeyValue(
                key=previous.key, value=b"", create_revision=0, mod_revision=revision, version=0
            )
            self._record(previous.key, revision, None, WatchEvent(EventType.DELETE, tombstone, previous))
        return bool(doomed)

    def _commit(self, revision: int) -> None:
        self._revision = revision
        for watch in self._watches:
            limit = watch.backlog
            if (
                limit
                and watch.full_since is None
                and self._backlog_of(watch, limit.max_bytes) > limit.max_bytes
            ):
                watch.full_since = self._clock()
        self._cond.notify_all()

    def _revoke(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        revision = self._revision + 1
        changed = False
        for key in sorted(lease.keys):
            changed = self._delete(Delete(key), revision) or changed
        if changed:
            self._commit(revision)

    def _expire_leases(self) -> None:
        now = self._clock()
        for lease_id in [lid for lid, lease in self._leases.items() if lease.expires_at <= now]:
            self._revoke(lease_id)

    def _signal(self, watch: MemoryWatch, flag: str) -> None:
        with self._cond:
            setattr(watch, flag, True)
            self._cond.notify_all()

    def _forget(self, watch: MemoryWatch) -> None:
        with self._cond:
            self._watches.discard(watch)

    def _next_batch(self, watch: MemoryWatch) -> WatchBatch | None:
        """The next batch for ``watch``: the events of its next matching revision, else a progress
        notification when one is due, else wait. None once the watch is cancelled."""
        with self._cond:
            while True:
                if watch.cancelled:
                    return None
                if watch.broken or not self._available:
                    raise KVUnavailableError("watch stream broken")
                if self._closed:
                    return None
                self._expire_leases()
                if watch.next_revision < self._compacted:
                    watch.cancelled = True
                    raise KVCompactedError(
                        f"watch from revision {watch.next_revision} is compacted (at {self._compacted})",
                        self._compacted,
                    )
                self._check_backlog(watch)
                batch = self._events_batch(watch)
                if batch is not None:
                    watch.full_since = None
                    return batch
                now = time.monotonic()
                due = watch.last_sent + self.progress_interval if self.progress_interval is not None else None
                if watch.progress_requested or (due is not None and now >= due):
                    watch.progress_requested = False
                    watch.last_sent = now
                    watch.full_since = None
                    return WatchBatch(events=(), revision=self._revision, progress=True)
                self._cond.wait(timeout=None if due is None else due - now)

    def _check_backlog(self, watch: MemoryWatch) -> None:
        """Raise ``KVWatchOverflowError`` if the consumer took nothing for the stall time since a write
        found the backlog full (when an etcd watch would have given up on it)."""
        limit = watch.backlog
        if limit is None or watch.full_since is None:
            return
        if self._clock() - watch.full_since >= limit.stall_seconds:
            watch.cancelled = True
            raise KVWatchOverflowError(
                f"watch consumer took nothing for {limit.stall_seconds:g} s with {limit.max_bytes} bytes "
                f"waiting; it has every event up to revision {watch.next_revision - 1}",
                watch.next_revision - 1,
            )

    def _backlog_of(self, watch: MemoryWatch, limit: int) -> int:
        """The bytes of matching events ``watch`` has not delivered, as an etcd watch would hold them
        for its consumer (counted up to just past ``limit``). One revision alone counts as none: it
        would arrive at an empty queue."""
        index = bisect.bisect_left(self._event_revisions, watch.next_revision)
        if index == len(self._events) or self._event_revisions[index] == self._event_revisions[-1]:
            return 0
        total = 0
        for event in self._events[index:]:
            if _in_range(event.kv.key, watch.low, watch.high):
                total += len(event.kv.key) + len(event.kv.value)
                if watch.prev_kv and event.prev_kv is not None:
                    total += len(event.prev_kv.value)
                if total > limit:
                    break
        return total

    def _events_batch(self, watch: MemoryWatch) -> WatchBatch | None:
        """Every matching event the watch has not seen yet, as etcd sends a watcher that catches
        up: several revisions in one batch, whole revisions only, at most ``_MAX_BATCH_REVISIONS``."""
        index = bisect.bisect_left(self._event_revisions, watch.next_revision)
        matching: list[WatchEvent] = []
        revisions = 0
        while index < len(self._events) and revisions < _MAX_BATCH_REVISIONS:
            revision = self._event_revisions[index]
            end = bisect.bisect_right(self._event_revisions, revision, lo=index)
            found = [
                event if watch.prev_kv else replace(event, prev_kv=None)
                for event in self._events[index:end]
                if _in_range(event.kv.key, watch.low, watch.high)
            ]
            matching += found
            revisions += bool(found)
            watch.next_revision = revision + 1
            index = end
        if index == len(self._events):
            watch.next_revision = max(watch.next_revision, self._revision + 1)
        if not matching:
            return None
        watch.last_sent = time.monotonic()
        return WatchBatch(events=tuple(matching), revision=matching[-1].kv.mod_revision)
