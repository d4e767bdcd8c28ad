"""``EtcdKV``: the ``KV`` interface over a real etcd v3 cluster, with a deadline on every call.

It talks to etcd's gRPC API through the generated stubs of python3-etcd3 (``etcd3.etcdrpc``) and
builds the protobuf requests itself: that is faster than the library's helpers and exact about
compares and ranges. Watches run on the raw bidirectional ``Watch`` stream, so a broken stream
raises ``KVUnavailableError`` instead of ending silently, and compaction raises
``KVCompactedError`` with etcd's compact revision.

gRPC failures become the errors of ``services.common.kv``: no connection, UNAVAILABLE or a missed
deadline -> ``KVUnavailableError``; a compacted revision -> ``KVCompactedError``; "too many
operations in txn request" -> ``KVTooManyOpsError``; and so on. With several endpoints, a call that
cannot reach one tries the next; reads, which are safe to repeat, are retried until their deadline.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2

from services.common.errors import InvalidArgument, OverlandError, ResourceExhausted
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
    Lease,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchBatch,
    WatchEvent,
    prefix_end,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_RECEIVE_BYTES = 256 * 1024 * 1024
# etcd's server drops connections that ping more often than every 5 s (--grpc-keepalive-min-time)
# and refuses pings without an open stream, so keepalive runs only while a call or watch is open.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after an etcd restart instead of gRPC's default backoff of up to 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)
_RETRY_PAUSE_SECONDS = 0.05
_RETRY_PAUSE_MAX_SECONDS = 0.5
# How long the compact-revision probe waits for etcd's answer after the watch was created.
_PROBE_SECONDS = 1.0

_UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)

# etcd's "require leader" metadata: a member that has lost its leader (cut off from the majority)
# refuses calls at once with "no leader" and cancels open watches, instead of serving stale reads
# and watches that silently stop.
REQUIRE_LEADER = (("hasleader", "true"),)
# The watch id etcd puts on its answer to a progress request (it answers for the whole stream).
REQUESTED_PROGRESS_ID = -1
# What a call that surely never took effect fails with: no connection to send it on, or refused
# by a member without a leader before anything was done.
_NOT_SENT = (
    "failed to connect to all addresses",
    "Connection refused",
    "DNS resolution failed",
    "etcdserver: no leader",
)

# What etcd says, under UNKNOWN or INTERNAL codes, when the cluster cannot serve right now: a lost
# or changing leader, or a proposal whose server-side context ran out while the leader was killed.
# Like a client-side deadline, such a write may or may not have been applied.
_TRANSIENT = (
    "no leader",
    "leader changed",
    "timed out",
    "context deadline exceeded",
    "context canceled",
    "proposal dropped",
    "too many requests",
)

_COMPARE_RESULTS = {
    CompareOp.EQUAL: etcdrpc.Compare.EQUAL,
    CompareOp.NOT_EQUAL: etcdrpc.Compare.NOT_EQUAL,
    CompareOp.LESS: etcdrpc.Compare.LESS,
    CompareOp.GREATER: etcdrpc.Compare.GREATER,
}
# Read per compare: enum members are slow to look up in Python 3.11.
_VALUE, _EQUAL = CompareTarget.VALUE, CompareOp.EQUAL
_COMPARE_TARGETS = {
    CompareTarget.VALUE: (etcdrpc.Compare.VALUE, "value"),
    CompareTarget.VERSION: (etcdrpc.Compare.VERSION, "version"),
    CompareTarget.CREATE: (etcdrpc.Compare.CREATE, "create_revision"),
    CompareTarget.MOD: (etcdrpc.Compare.MOD, "mod_revision"),
}


class KVSpaceExceededError(ResourceExhausted):
    """etcd's backend is over its quota (--quota-backend-bytes): it accepts no writes until
    compacted, defragmented and its alarm disarmed."""


class KVServerError(OverlandError):
    """etcd failed a request for a reason none of the other KV errors names."""


@dataclass(frozen=True)
class EtcdTlsConfig:
    """Client TLS to etcd: ``ca`` verifies the server; ``cert``/``key`` authenticate this client."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # When the certificate's name differs from the endpoint host (e.g. connecting by IP).
    server_name: str | None = None

    def validate(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InvalidArgument("etcd TLS cert and key go together")
        for path in (self.ca, self.cert, self.key):
            if path is not None and not path.is_file():
                raise InvalidArgument(f"etcd TLS file not found: {path}")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )


@dataclass(frozen=True)
class EtcdConfig:
    """How a service reaches etcd. ``timeout`` is the deadline of every call, in seconds;
    ``watch_idle_timeout``, when set, declares a watch broken after that long without any response
    (set it above etcd's progress-notify interval)."""

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    timeout: float = 2.0
    max_txn_ops: int = 128
    tls: EtcdTlsConfig | None = None
    watch_idle_timeout: float | None = None

    def validate(self) -> None:
        if not self.endpoints:
            raise InvalidArgument("at least one etcd endpoint is needed")
        for endpoint in self.endpoints:
            parse_endpoint(endpoint)
        if self.timeout <= 0:
            raise InvalidArgument("etcd timeout must be positive")
        if self.max_txn_ops < 1:
            raise InvalidArgument("max_txn_ops must be at least 1")
        if self.watch_idle_timeout is not None and self.watch_idle_timeout <= 0:
            raise InvalidArgument("watch_idle_timeout must be positive")
        if self.tls is not None:
            self.tls.validate()


def parse_endpoint(endpoint: str) -> str:
    """``host:port`` from ``host:port``, ``http://host:port`` or ``https://host:port``."""
    target = endpoint.strip()
    for scheme in ("http://", "https://"):
        target = target.removeprefix(scheme)
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"etcd endpoint must be host:port, got {endpoint!r}")
    return target


# -- protobuf conversion (pure) ----------------------------------------------------------------


def span(key: bytes, prefix: bool, start: bytes | None = None) -> tuple[bytes, bytes]:
    """etcd's (key, range_end) for one key, or for every key starting with ``key`` (from ``start``).

    etcd has no empty key: the whole keyspace is key ``\\0`` to range_end ``\\0``.
    """
    if not prefix:
        return key, b""
    low = max(key, start) if start is not None else key
    return low or b"\0", prefix_end(key)


def key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )


def fill_compare(message: Any, compare: Compare) -> None:
    """Fill an ``etcdrpc.Compare`` in place (building nested messages and copying them in costs ~2.6x
    more on large transactions, which bulk loads are). Fields at their default (VERSION, EQUAL) are
    not set: a bulk load's transactions hold over a hundred "absent" compares."""
    target, operand = compare.target, compare.operand
    if isinstance(operand, bytes) != (target is _VALUE):
        raise KVRequestError(f"compare on {target.value} needs a {'bytes' if target is _VALUE else 'int'}")
    message.key = compare.key
    code, attribute = _COMPARE_TARGETS[target]
    if code:
        message.target = code
    if compare.op is not _EQUAL:
        message.result = _COMPARE_RESULTS[compare.op]
    # The operand is a oneof member: set even when zero, so etcd sees which target it holds.
    setattr(message, attribute, operand)


def fill_op(message: Any, op: Op) -> None:
    """Fill an ``etcdrpc.RequestOp`` in place."""
    if isinstance(op, Put):
        put = message.request_put
        put.key = op.key
        put.value = op.value
        if op.lease:
            put.lease = op.lease
        return
    key, range_end = span(op.key, op.prefix)
    request = message.request_delete_range if isinstance(op, Delete) else message.request_range
    request.key = key
    if range_end:
        request.range_end = range_end
    else:
        # A oneof member with only default fields must still be selected.
        request.SetInParent()


def compare_message(compare: Compare) -> Any:
    message = etcdrpc.Compare()
    fill_compare(message, compare)
    return message


def op_message(op: Op) -> Any:
    message = etcdrpc.RequestOp()
    fill_op(message, op)
    return message


def txn_request(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> Any:
    request = etcdrpc.TxnRequest()
    add = request.compare.add
    for compare in compares:
        fill_compare(add(), compare)
    for branch, ops in ((request.success, success), (request.failure, failure)):
        add = branch.add
        for op in ops:
            fill_op(add(), op)
    return request


def txn_result(response: Any, ran: Sequence[Op] | None = None) -> TxnResult:
    """The result of a transaction. Given the ops of the branch that ran, responses are only
    looked into when some of them read (a bulk load's puts answer with over a hundred empty ones)."""
    responses: tuple[tuple[KeyValue, ...], ...]
    if ran is not None and not any(isinstance(op, Get) for op in ran):
        responses = ((),) * len(response.responses)
    else:
        responses = tuple(
            tuple(key_value(kv) for kv in item.response_range.kvs)
            if item.WhichOneof("response") == "response_range"
            else ()
            for item in response.responses
        )
    return TxnResult(succeeded=response.succeeded, revision=response.header.revision, responses=responses)


def watch_event(event: Any) -> WatchEvent:
    prev = key_value(event.prev_kv) if event.HasField("prev_kv") else None
    kind = EventType.DELETE if event.type == kv_pb2.Event.DELETE else EventType.PUT
    return WatchEvent(type=kind, kv=key_value(event.kv), prev_kv=prev)


def watch_batch(response: Any) -> WatchBatch:
    """The batch one WatchResponse brings. Event responses are complete per revision, so the last
    event's revision is the resume point; a response without events is a progress notification,
    which vouches for everything up to its header revision."""
    if response.events:
        events = tuple(watch_event(event) for event in response.events)
        return WatchBatch(events=events, revision=events[-1].kv.mod_revision)
    return WatchBatch(events=(), revision=response.header.revision, progress=True)


# -- error mapping -----------------------------------------------------------------------------


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a failed call (grpc's errors are also ``grpc.Call``s)."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    return (
        code() if callable(code) else grpc.StatusCode.UNKNOWN,
        (details() if callable(details) else str(error)) or "",
    )


def map_grpc_error(error: grpc.RpcError, what: str) -> OverlandError:
    """The KV error for a failed etcd call. Compaction errors get compact revision 0 here; the
    caller fills it in when it can learn it."""
    code, details = status_of(error)
    message = f"etcd {what}: {details or code.name}"
    if code in _UNAVAILABLE_CODES:
        return KVUnavailableError(message)
    if "required revision has been compacted" in details:
        return KVCompactedError(message, 0)
    if "too many operations in txn request" in details:
        return KVTooManyOpsError(message)
    if "requested lease not found" in details:
        return KVLeaseNotFoundError(message)
    if "database space exceeded" in details:
        return KVSpaceExceededError(message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return KVRequestError(message)
    if any(reason in details for reason in _TRANSIENT):
        return KVUnavailableError(message)
    return KVServerError(message)


@dataclass(frozen=True)
class EtcdStubs:
    """The stubs of one channel, made once: making a stub builds a callable per method."""

    channel: grpc.Channel
    kv: Any
    lease: Any
    watch: Any
    maintenance: Any = None

    @classmethod
    def on(cls, channel: grpc.Channel) -> EtcdStubs:
        return cls(
            channel,
            etcdrpc.KVStub(channel),
            etcdrpc.LeaseStub(channel),
            etcdrpc.WatchStub(channel),
            etcdrpc.MaintenanceStub(channel),
        )


def requested_progress_is_ordered(version: str) -> bool:
    """Whether etcd ``version`` answers a progress *request* in order with the watch's events.

    Before 3.4.24 and 3.5.8 it answers at once with its current revision, possibly ahead of events
    it has still to send (etcd-io/etcd#15220): such an answer must not count as a resume point.
    """
    try:
        major, minor, patch = (int(part) for part in version.split("-", maxsplit=1)[0].split(".")[:3])
    except ValueError:
        return False
    if (major, minor) == (3, 5):
        return patch >= 8
    if (major, minor) == (3, 4):
        return patch >= 24
    return (major, minor) > (3, 5)


def never_sent(error: grpc.RpcError) -> bool:
    """Whether a failed call surely never took effect (no connection, or refused by a member
    without a leader), so even a write may be sent again."""
    _, details = status_of(error)
    return any(sign in details for sign in _NOT_SENT)


class EtcdKV:
    """The ``KV`` interface over etcd (see the module docstring). Thread-safe."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = 2.0,
        max_txn_ops: int = 128,
        tls: EtcdTlsConfig | None = None,
        watch_idle_timeout: float | None = None,
    ):
        config = EtcdConfig(
            endpoints=(endpoints,) if isinstance(endpoints, str) else tuple(endpoints),
            timeout=timeout,
            max_txn_ops=max_txn_ops,
            tls=tls,
            watch_idle_timeout=watch_idle_timeout,
        )
        config.validate()
        self.config = config
        self.timeout = timeout
        self.max_txn_ops = max_txn_ops
        self.endpoints = tuple(parse_endpoint(e) for e in config.endpoints)
        self._credentials = tls.credentials() if tls else None
        self._lock = threading.Lock()
        self._stubs: dict[str, EtcdStubs] = {}
        # With one endpoint, a call waits (within its deadline) for the channel to reconnect, e.g.
        # while etcd restarts; with several, it fails fast so the next endpoint can be tried.
        self.wait_for_ready = len(self.endpoints) == 1
        self._current = 0
        self._closed = False
        self._watches: set[EtcdWatch] = set()
        self._progress_ordered: dict[str, bool] = {}

    @classmethod
    def from_config(cls, config: EtcdConfig) -> EtcdKV:
        return cls(
            config.endpoints,
            timeout=config.timeout,
            max_txn_ops=config.max_txn_ops,
            tls=config.tls,
            watch_idle_timeout=config.watch_idle_timeout,
        )

    # -- connection ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        with self._lock:
            return self.endpoints[self._current]

    def stubs(self) -> EtcdStubs:
        """The stubs for the current endpoint, its channel made on first use. gRPC connects lazily,
        within the deadline of the first call."""
        with self._lock:
            if self._closed:
                raise KVUnavailableError("etcd client is closed")
            endpoint = self.endpoints[self._current]
            stubs = self._stubs.get(endpoint)
            if stubs is None:
                options = list(_CHANNEL_OPTIONS)
                tls = self.config.tls
                if self._credentials is not None:
                    if tls is not None and tls.server_name:
                        options.append(("grpc.ssl_target_name_override", tls.server_name))
                    channel = grpc.secure_channel(endpoint, self._credentials, options=options)
                else:
                    channel = grpc.insecure_channel(endpoint, options=options)
                stubs = self._stubs[endpoint] = EtcdStubs.on(channel)
            return stubs

    def _fail_over(self, failed: EtcdStubs) -> None:
        """Move to the next endpoint after ``failed`` could not serve a call."""
        with self._lock:
            if self._stubs.get(self.endpoints[self._current]) is failed and len(self.endpoints) > 1:
                self._current = (self._current + 1) % len(self.endpoints)
                log.warning("etcd endpoint failed, trying %s", self.endpoints[self._current])

    def _call(self, what: str, invoke: Callable[[EtcdStubs, float], T], *, idempotent: bool) -> T:
        """Run one unary etcd call within ``timeout``. Idempotent calls are retried (on the next
        endpoint, when there is one) until the deadline; others only when they never left (no
        connection could be made)."""
        deadline = time.monotonic() + self.timeout
        for attempt in itertools.count():
            stubs = self.stubs()
            remaining = deadline - time.monotonic()
            budget = remaining
            if idempotent and attempt < len(self.endpoints) - 1:
                # A hung member (paused, partitioned mid-call) must not eat the whole deadline of a
                # read that another endpoint could serve: each untried endpoint gets a fair share.
                budget = remaining / (len(self.endpoints) - attempt)
            try:
                return invoke(stubs, max(budget, 0.001))
            except grpc.RpcError as error:
                mapped = map_grpc_error(error, what)
                if not isinstance(mapped, KVUnavailableError):
                    raise mapped from error
                self._fail_over(stubs)
                pause = min(_RETRY_PAUSE_SECONDS * 2**attempt, _RETRY_PAUSE_MAX_SECONDS)
                retry = idempotent or never_sent(error)
                if not retry or time.monotonic() + pause >= deadline:
                    raise mapped from error
                time.sleep(pause)
            except ValueError as error:
                # grpc raises ValueError for a call on a channel closed by close() in another thread.
                raise KVUnavailableError(f"etcd {what}: {error}") from error
        raise AssertionError("unreachable")

    # -- reads ---------------------------------------------------------------------------------

    def _range(self, request: Any, what: str) -> Any:
        try:
            return self._call(
                what,
                lambda stubs, timeout: stubs.kv.Range(
                    request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=REQUIRE_LEADER
                ),
                idempotent=True,
            )
        except KVCompactedError as error:
            raise KVCompactedError(error.message, self._probe_compact_revision()) from error

    def get(self, key: bytes) -> KeyValue | None:
        response = self._range(etcdrpc.RangeRequest(key=key), "get")
        return key_value(response.kvs[0]) if response.kvs else None

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
        key, range_end = span(prefix, True, start)
        request = etcdrpc.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            revision=max(revision, 0),
            keys_only=keys_only,
            count_only=count_only,
        )
        response = self._range(request, "range")
        return RangeResult(
            kvs=tuple(key_value(kv) for kv in response.kvs),
            more=response.more,
            revision=response.header.revision,
            count=response.count,
        )

    def current_revision(self) -> int:
        # A read of one (absent) key: the cheapest request whose header carries the revision.
        response = self._range(etcdrpc.RangeRequest(key=b"\0", count_only=True), "current_revision")
        revision: int = response.header.revision
        return revision

    # -- writes --------------------------------------------------------------------------------

    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        request = txn_request(compares, success, failure)
        read_only = all(isinstance(op, Get) for op in (*success, *failure))
        try:
            response = self._call(
                "txn",
                lambda stubs, timeout: stubs.kv.Txn(
                    request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=REQUIRE_LEADER
                ),
                idempotent=read_only,
            )
        except KVCompactedError as error:  # pragma: no cover - txn reads only at the latest revision
            raise KVCompactedError(error.message, self._probe_compact_revision()) from error
        return txn_result(response, success if response.succeeded else failure)

    def compact(self, revision: int) -> None:
        request = etcdrpc.CompactionRequest(revision=revision, physical=False)
        try:
            self._call(
                "compact",
                lambda stubs, timeout: stubs.kv.Compact(
                    request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=REQUIRE_LEADER
                ),
                idempotent=False,
            )
        except KVCompactedError as error:
            raise KVCompactedError(error.message, self._probe_compact_revision()) from error

    # -- leases --------------------------------------------------------------------------------

    def grant_lease(self, ttl: int) -> Lease:
        if ttl < 1:
            raise KVRequestError("lease TTL must be at least 1 second")
        request = etcdrpc.LeaseGrantRequest(TTL=ttl, ID=0)
        response = self._call(
            "grant_lease",
            lambda stubs, timeout: stubs.lease.LeaseGrant(
                request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=REQUIRE_LEADER
            ),
            idempotent=False,
        )
        if response.error:
            raise KVServerError(f"etcd grant_lease: {response.error}")
        return Lease(id=response.ID, ttl=response.TTL)

    def refresh_lease(self, lease_id: int) -> int:
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def keep_alive(stubs: EtcdStubs, timeout: float) -> int:
            responses = stubs.lease.LeaseKeepAlive(
                iter([request]), timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=REQUIRE_LEADER
            )
            try:
                ttl: int = next(responses).TTL
            finally:
                responses.cancel()
            return ttl

        return self._call("refresh_lease", keep_alive, idempotent=True)

    def revoke_lease(self, lease_id: int) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        self._call(
            "revoke_lease",
            lambda stubs, timeout: stubs.lease.LeaseRevoke(
                request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=REQUIRE_LEADER
            ),
            idempotent=True,
        )

    # -- watch ---------------------------------------------------------------------------------

    def watch(self, prefix: bytes, start_revision: int, *, prev_kv: bool = False) -> EtcdWatch:
        """Open a watch; returns once etcd has created it (within the deadline)."""
        key, range_end = span(prefix, True)
        create = etcdrpc.WatchCreateRequest(
            key=key,
            range_end=range_end,
            start_revision=max(start_revision, 0),
            progress_notify=True,
            prev_kv=prev_kv,
        )
        deadline = time.monotonic() + self.timeout
        while True:
            stubs = self.stubs()
            ordered = self._requested_progress_ordered(stubs, deadline)
            watch = EtcdWatch(
                self, stubs, create, self.config.watch_idle_timeout, trust_requested_progress=ordered
            )
            try:
                watch.wait_created(max(deadline - time.monotonic(), 0.001))
            except KVUnavailableError:
                watch.cancel()
                self._fail_over(stubs)
                if time.monotonic() + _RETRY_PAUSE_SECONDS >= deadline:
                    raise
                time.sleep(_RETRY_PAUSE_SECONDS)
                continue
            with self._lock:
                if self._closed:
                    watch.cancel()
                    raise KVUnavailableError("etcd client is closed")
                self._watches.add(watch)
            return watch

    def _requested_progress_ordered(self, stubs: EtcdStubs, deadline: float) -> bool:
        """Whether the endpoint's etcd version answers progress requests in order (asked once per
        endpoint; an endpoint that cannot say is not trusted)."""
        with self._lock:
            endpoint = self.endpoints[self._current]
            known = self._progress_ordered.get(endpoint)
        if known is not None:
            return known
        try:
            status = stubs.maintenance.Status(
                etcdrpc.StatusRequest(),
                timeout=max(deadline - time.monotonic(), 0.001),
                wait_for_ready=self.wait_for_ready,
                metadata=REQUIRE_LEADER,
            )
        except grpc.RpcError:
            return False
        ordered = requested_progress_is_ordered(status.version)
        with self._lock:
            self._progress_ordered[endpoint] = ordered
        return ordered

    def _forget(self, watch: EtcdWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _probe_compact_revision(self) -> int:
        """etcd's compact revision (0 if it cannot be learned in time). etcd only reports it to a
        watch that starts below it, so open one at revision 1 on the reserved key ``\\0``."""
        create = etcdrpc.WatchCreateRequest(key=b"\0", start_revision=1)
        try:
            watch = EtcdWatch(self, self.stubs(), create, None)
        except KVUnavailableError:
            return 0
        try:
            watch.wait_created(self.timeout)
            watch.next_batch(min(self.timeout, _PROBE_SECONDS))
        except KVCompactedError as error:
            return error.compact_revision
        except KVUnavailableError:
            return 0
        finally:
            watch.cancel()
        return 0

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watches = list(self._watches)
            stubs = list(self._stubs.values())
            self._stubs.clear()
        for watch in watches:
            watch.cancel()
        for each in stubs:
            each.channel.close()

    def __enter__(self) -> EtcdKV:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_END = object()
_NOTHING = object()
# The most already-arrived responses one batch merges (bounds a batch's size).
_MAX_MERGED_RESPONSES = 256


class EtcdWatch:
    """One etcd watch on its own bidirectional stream; see ``WatchStream``.

    A reader thread moves responses into a queue, so that waiting for the next one can have a
    deadline (creation) or an idle limit, and ``cancel()`` from any thread ends the iteration.
    """

    def __init__(
        self,
        owner: EtcdKV,
        stubs: EtcdStubs,
        create: Any,
        idle_timeout: float | None,
        *,
        trust_requested_progress: bool = True,
    ) -> None:
        self._owner = owner
        self._idle_timeout = idle_timeout
        self._trust_requested_progress = trust_requested_progress
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        # A response that ends the stream, taken while merging and kept for the next take.
        self._held: Any = _NOTHING
        self._created = False
        # The resume point: everything below the start revision counts as delivered.
        self._delivered = max(create.start_revision - 1, 0)
        self._from_now = create.start_revision <= 0
        self._requests.put(etcdrpc.WatchRequest(create_request=create))
        try:
            # No gRPC deadline: the stream lives as long as the watch; creation and idleness are
            # bounded by wait_created() and the idle timeout instead.
            self._call = stubs.watch.Watch(
                self._request_stream(), wait_for_ready=owner.wait_for_ready, metadata=REQUIRE_LEADER
            )
        except ValueError as error:
            raise KVUnavailableError(f"etcd watch: {error}") from error
        self._reader = threading.Thread(target=self._read, name="etcd-watch-reader", daemon=True)
        self._reader.start()

    def _request_stream(self) -> Iterator[Any]:
        while True:
            request = self._requests.get()
            if request is _END:
                return
            yield request

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
        except grpc.RpcError as error:
            self._responses.put(error)
        self._responses.put(_END)

    def _take(self, timeout: float | None) -> Any:
        """The next response, or raise what ended the stream. None once cancelled."""
        item, self._held = self._held, _NOTHING
        if item is _NOTHING:
            try:
                item = self._responses.get(timeout=timeout)
            except queue.Empty:
                self.cancel()
                raise KVUnavailableError(f"etcd watch: no response within {timeout:.3g}s") from None
        if self._cancelled.is_set():
            return None
        if isinstance(item, grpc.RpcError):
            self.cancel()
            raise map_grpc_error(item, "watch") from item
        if item is _END:
            self.cancel()
            raise KVUnavailableError("etcd watch: the stream ended")
        if item.compact_revision:
            self.cancel()
            raise KVCompactedError(
                f"etcd watch: revision compacted (at {item.compact_revision})", item.compact_revision
            )
        if item.canceled:
            self.cancel()
            raise KVUnavailableError(f"etcd watch: cancelled by etcd: {item.cancel_reason or 'no reason'}")
        return item

    def wait_created(self, timeout: float) -> None:
        """Wait for etcd to confirm the watch; KVUnavailableError if it does not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._created:
            response = self._take(max(deadline - time.monotonic(), 0.001))
            if response is None:
                raise KVUnavailableError("etcd watch: cancelled before it was created")
            if response.created:
                self._created = True
                if self._from_now:
                    # A watch "from now" sees every event after the revision it was created at.
                    self._delivered = response.header.revision
                if response.events:  # pragma: no cover - etcd never sends events with "created"
                    self._responses.put(response)

    def next_batch(self, timeout: float | None, *, merge: bool = False) -> WatchBatch | None:
        """The next batch, waiting at most ``timeout`` (None: the idle timeout, or forever): one
        response, or with ``merge`` every response that has already arrived (iteration merges).

        Merging lets a consumer that fell behind pay its per-batch cost once for all that queued up
        meanwhile instead of once per response (an agent's table update, datapath apply and span).
        """
        response = self._take(timeout)
        if response is None:
            return None
        batch = self._resume_point(response)
        if not merge or not self._responses.qsize():
            return batch
        events = list(batch.events)
        progress = batch.progress
        for _ in range(_MAX_MERGED_RESPONSES):
            following = self._ready()
            if following is None:
                break
            batch = self._resume_point(following)
            events.extend(batch.events)
            progress = progress and batch.progress
        return WatchBatch(events=tuple(events), revision=batch.revision, progress=progress)

    def _ready(self) -> Any:
        """A response that has already arrived and brings events or progress, else None. Anything that
        ends the stream is held back for the next ``_take``, after what came before it is delivered."""
        if self._held is not _NOTHING:
            return None
        try:
            item = self._responses.get_nowait()
        except queue.Empty:
            return None
        if item is _END or isinstance(item, grpc.RpcError) or item.compact_revision or item.canceled:
            self._held = item
            return None
        return item

    def _resume_point(self, response: Any) -> WatchBatch:
        batch = watch_batch(response)
        untrusted = response.watch_id == REQUESTED_PROGRESS_ID and not self._trust_requested_progress
        if batch.progress and (untrusted or batch.revision < self._delivered):
            # A resume point never moves back, and never past events an old etcd may still send
            # after answering a progress request (etcd-io/etcd#15220).
            batch = replace(batch, revision=self._delivered)
        self._delivered = batch.revision
        return batch

    def __iter__(self) -> EtcdWatch:
        # The stream is its own iterator, so consecutive loops over it continue where the last
        # one stopped instead of starting (and, when dropped, cancelling) a new generator.
        return self

    def __next__(self) -> WatchBatch:
        batch = self.next_batch(self._idle_timeout, merge=True)
        if batch is None:
            raise StopIteration
        return batch

    def request_progress(self) -> None:
        if not self._cancelled.is_set():
            self._requests.put(etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest()))

    def cancel(self) -> None:
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        self._requests.put(_END)
        self._call.cancel()
        # Wake an iteration blocked on the queue; it sees the flag and ends.
        self._responses.put(_END)
        self._owner._forget(self)

    def break_stream(self) -> None:
        """Break the gRPC stream under the watch without cancelling it (for tests): the iteration
        raises KVUnavailableError, as it does when the connection is lost."""
        self._call.cancel()
