"""``EtcdKV``: the ``KV`` interface over a real etcd v3 cluster, with a deadline on every call.

It talks to etcd's gRPC API through the generated stubs of python3-etcd3 (``etcd3.etcdrpc``) and
builds the protobuf requests itself (etcd_messages.py): that is faster than the library's helpers and
exact about compares and ranges. Watches run on the raw bidirectional ``Watch`` stream (etcd_watch.py),
so a broken stream raises ``KVUnavailableError`` instead of ending silently, and compaction raises
``KVCompactedError`` with etcd's compact revision.

This module is the client: endpoints, channels, deadlines, retries and failover. gRPC failures become
the errors of ``services.common.kv`` (``etcd_messages.map_grpc_error``), each naming the endpoint that
failed. With several endpoints, a call that cannot reach one tries the next; reads, which are safe to
repeat, are retried until their deadline.

With credentials (docs/security.md) it authenticates as its user on first use and sends the token etcd
gives with every call; when etcd no longer knows the token (it expired unused, or etcd restarted) it
authenticates again and repeats the call, once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import grpc
from etcd3 import etcdrpc

from overland.config import TlsFiles
from overland.defaults import ETCD_TIMEOUT_SECONDS
from services.common.config import EtcdConfig, EtcdCredentials, parse_endpoint
from services.common.errors import ServiceError
from services.common.etcd_messages import (
    EtcdStubs,
    KVInvalidTokenError,
    KVServerError,
    call_metadata,
    key_value,
    map_grpc_error,
    never_sent,
    span,
    txn_request,
    txn_result,
    where,
)
from services.common.etcd_watch import EtcdWatch, requested_progress_is_ordered
from services.common.kv import (
    Compare,
    Get,
    KeyValue,
    KVCompactedError,
    KVPermissionDeniedError,
    KVRequestError,
    KVUnavailableError,
    Lease,
    Op,
    RangeResult,
    TxnResult,
    WatchBacklog,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

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
# Watches with a bounded backlog (a WatchTable for a client that may stop reading) run on a connection
# of their own without BDP probing, so the stream window stays at HTTP/2's 64 KiB: when such a watch
# stops reading, etcd keeps the rest instead of gRPC buffering many MiB of it here (BDP probing grows
# a window on loopback to tens of MiB). Their responses stay serialized until taken (RawWatchStub),
# so the backlog's bound in bytes is what they cost.
_BOUNDED_WATCH_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.http2.bdp_probe", 0),
    ("grpc.use_local_subchannel_pool", 1),
)
_RETRY_PAUSE_SECONDS = 0.05
_RETRY_PAUSE_MAX_SECONDS = 0.5
# How long the compact-revision probe waits for etcd's answer after the watch was created.
_PROBE_SECONDS = 1.0


class EtcdKV:
    """The ``KV`` interface over etcd (see the module docstring). Thread-safe."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = ETCD_TIMEOUT_SECONDS,
        max_txn_ops: int = 128,
        tls: TlsFiles | None = None,
        watch_idle_timeout: float | None = None,
        credentials: EtcdCredentials | None = None,
    ):
        config = EtcdConfig(
            endpoints=(endpoints,) if isinstance(endpoints, str) else tuple(endpoints),
            timeout=timeout,
            max_txn_ops=max_txn_ops,
            tls=tls,
            watch_idle_timeout=watch_idle_timeout,
            credentials=credentials,
        )
        config.validate()
        self.config = config
        self.timeout = timeout
        self.max_txn_ops = max_txn_ops
        self.endpoints = tuple(parse_endpoint(e) for e in config.endpoints)
        self._credentials = tls.credentials() if tls else None
        self._lock = threading.Lock()
        self._stubs: dict[str, EtcdStubs] = {}
        # The connections of watches with a bounded backlog (see _BOUNDED_WATCH_OPTIONS).
        self._bounded_stubs: dict[str, EtcdStubs] = {}
        # With one endpoint, a call waits (within its deadline) for the channel to reconnect, e.g.
        # while etcd restarts; with several, it fails fast so the next endpoint can be tried.
        self.wait_for_ready = len(self.endpoints) == 1
        self._current = 0
        self._closed = False
        self._watches: set[EtcdWatch] = set()
        self._progress_ordered: dict[str, bool] = {}
        self.credentials = credentials
        self.user = credentials.user if credentials else None
        # etcd's token for ``credentials`` (valid on every member), got on first use; one thread at a
        # time asks for a new one.
        self._token: str | None = None
        self._auth_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EtcdConfig) -> Self:
        return cls(
            config.endpoints,
            timeout=config.timeout,
            max_txn_ops=config.max_txn_ops,
            tls=config.tls,
            watch_idle_timeout=config.watch_idle_timeout,
            credentials=config.credentials,
        )

    # -- connection ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        with self._lock:
            return self.endpoints[self._current]

    def stubs(self, *, bounded_watch: bool = False) -> EtcdStubs:
        """The stubs for the current endpoint, its channel made on first use. gRPC connects lazily,
        within the deadline of the first call. ``bounded_watch``: the connection for watches with a
        bounded backlog."""
        with self._lock:
            if self._closed:
                raise KVUnavailableError("etcd client is closed")
            endpoint = self.endpoints[self._current]
            made = self._bounded_stubs if bounded_watch else self._stubs
            stubs = made.get(endpoint)
            if stubs is None:
                options = list(_CHANNEL_OPTIONS)
                if bounded_watch:
                    options += _BOUNDED_WATCH_OPTIONS
                tls = self.config.tls
                if self._credentials is not None:
                    if tls is not None and tls.server_name:
                        options.append(("grpc.ssl_target_name_override", tls.server_name))
                    channel = grpc.secure_channel(endpoint, self._credentials, options=options)
                else:
                    channel = grpc.insecure_channel(endpoint, options=options)
                stubs = made[endpoint] = EtcdStubs.on(channel, endpoint, raw_watch=bounded_watch)
            return stubs

    def _fail_over(self, failed: EtcdStubs, error: ServiceError) -> None:
        """Move to the next endpoint after ``failed`` could not serve a call (``error``)."""
        with self._lock:
            current = self.endpoints[self._current]
            ours = failed is self._stubs.get(current) or failed is self._bounded_stubs.get(current)
            if ours and len(self.endpoints) > 1:
                self._current = (self._current + 1) % len(self.endpoints)
                log.warning(
                    "etcd endpoint failed, trying the next",
                    extra={
                        "failed": failed.endpoint,
                        "next": self.endpoints[self._current],
                        "error": error.message,
                    },
                )

    # -- authentication ------------------------------------------------------------------------

    def _metadata(self, stubs: EtcdStubs, timeout: float) -> Metadata:
        """The metadata of a call through ``stubs``: with credentials, a token (authenticating first
        when there is none yet). May raise ``grpc.RpcError`` from the authentication."""
        if self.credentials is None:
            return call_metadata(None)
        token = self._token
        if token is None:
            with self._auth_lock:
                token = self._token
                if token is None:
                    request = etcdrpc.AuthenticateRequest(
                        name=self.credentials.user, password=self.credentials.password
                    )
                    response = stubs.auth.Authenticate(
                        request,
                        timeout=timeout,
                        wait_for_ready=self.wait_for_ready,
                        metadata=call_metadata(None),
                    )
                    token = self._token = str(response.token)
        return call_metadata(token)

    def _forget_token(self, metadata: Metadata) -> None:
        """The token sent with ``metadata`` was refused: the next call authenticates again (unless
        another thread already did)."""
        with self._auth_lock:
            if ("token", self._token) in metadata:
                self._token = None

    def _call(
        self,
        what: str,
        invoke: Callable[[EtcdStubs, float, Metadata], T],
        *,
        idempotent: bool,
        timeout: float | None = None,
    ) -> T:
        """Run one unary etcd call within ``timeout`` (default: the client's). Idempotent calls are
        retried (on the next endpoint, when there is one) until the deadline; others only when they
        never left (no connection could be made). A call whose token etcd no longer knows is repeated
        once with a new one (it was refused, so it did nothing)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        renewed = False
        for attempt in itertools.count():
            stubs = self.stubs()
            remaining = deadline - time.monotonic()
            budget = remaining
            if idempotent and attempt < len(self.endpoints) - 1:
                # A hung member (paused, partitioned mid-call) must not eat the whole deadline of a
                # read that another endpoint could serve: each untried endpoint gets a fair share.
                budget = remaining / (len(self.endpoints) - attempt)
            metadata: Metadata = ()
            try:
                metadata = self._metadata(stubs, max(budget, 0.001))
                return invoke(stubs, max(budget, 0.001), metadata)
            except grpc.RpcError as error:
                mapped = map_grpc_error(error, what, stubs.endpoint, self.user)
                if isinstance(mapped, KVInvalidTokenError) and not renewed:
                    renewed = True
                    self._forget_token(metadata)
                    continue
                if not isinstance(mapped, KVUnavailableError):
                    raise mapped from error
                self._fail_over(stubs, mapped)
                pause = min(_RETRY_PAUSE_SECONDS * 2**attempt, _RETRY_PAUSE_MAX_SECONDS)
                retry = idempotent or never_sent(error)
                if not retry or time.monotonic() + pause >= deadline:
                    raise mapped from error
                time.sleep(pause)
            except ValueError as error:
                # grpc raises ValueError for a call on a channel closed by close() in another thread.
                raise KVUnavailableError(f"{where(stubs.endpoint, what)}: {error}") from error
        raise AssertionError("unreachable")

    # -- reads ---------------------------------------------------------------------------------

    def _range(self, request: Any, what: str) -> Any:
        try:
            return self._call(
                what,
                lambda stubs, timeout, metadata: stubs.kv.Range(
                    request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=metadata
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
                lambda stubs, timeout, metadata: stubs.kv.Txn(
                    request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=metadata
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
                lambda stubs, timeout, metadata: stubs.kv.Compact(
                    request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=metadata
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
            lambda stubs, timeout, metadata: stubs.lease.LeaseGrant(
                request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=metadata
            ),
            idempotent=False,
        )
        if response.error:
            raise KVServerError(f"{where(self.endpoint, 'grant_lease')}: {response.error}")
        return Lease(id=response.ID, ttl=response.TTL)

    def refresh_lease(self, lease_id: int) -> int:
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def keep_alive(stubs: EtcdStubs, timeout: float, metadata: Metadata) -> int:
            responses = stubs.lease.LeaseKeepAlive(
                iter([request]), timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=metadata
            )
            try:
                ttl: int = next(responses).TTL
            finally:
                responses.cancel()
            return ttl

        return self._call("refresh_lease", keep_alive, idempotent=True)

    def revoke_lease(self, lease_id: int, *, timeout: float | None = None) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        self._call(
            "revoke_lease",
            lambda stubs, budget, metadata: stubs.lease.LeaseRevoke(
                request, timeout=budget, wait_for_ready=self.wait_for_ready, metadata=metadata
            ),
            idempotent=True,
            timeout=timeout,
        )

    # -- users and roles -----------------------------------------------------------------------

    def auth(self, method: str, request: Any) -> Any:
        """One call of etcd's Auth API (``UserAdd``, ``RoleGrantPermission``...; services.common.
        etcd_auth manages users with it), within the deadline."""
        return self._call(
            method,
            lambda stubs, timeout, metadata: getattr(stubs.auth, method)(
                request, timeout=timeout, wait_for_ready=self.wait_for_ready, metadata=metadata
            ),
            idempotent=True,
        )

    # -- watch ---------------------------------------------------------------------------------

    def watch(
        self,
        prefix: bytes,
        start_revision: int,
        *,
        prev_kv: bool = False,
        backlog: WatchBacklog | None = None,
    ) -> EtcdWatch:
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
        renewed = False
        while True:
            stubs = self.stubs(bounded_watch=backlog is not None)
            try:
                metadata = self._metadata(stubs, max(deadline - time.monotonic(), 0.001))
            except grpc.RpcError as error:
                mapped = map_grpc_error(error, "watch", stubs.endpoint, self.user)
                if not isinstance(mapped, KVUnavailableError):
                    raise mapped from error
                self._retry_watch(stubs, mapped, deadline)
                continue
            ordered = self._requested_progress_ordered(stubs, deadline, metadata)
            watch = EtcdWatch(
                self,
                stubs,
                create,
                self.config.watch_idle_timeout,
                trust_requested_progress=ordered,
                backlog=backlog,
                metadata=metadata,
            )
            try:
                watch.wait_created(max(deadline - time.monotonic(), 0.001))
            except KVPermissionDeniedError:
                watch.cancel()
                # etcd refuses a watch whose token it no longer knows as "permission denied", as it
                # does one its user may not read: a new token tells the two apart.
                if self.credentials is None or renewed:
                    raise
                renewed = True
                self._forget_token(metadata)
                continue
            except KVUnavailableError as error:
                watch.cancel()
                self._retry_watch(stubs, error, deadline)
                continue
            with self._lock:
                if self._closed:
                    watch.cancel()
                    raise KVUnavailableError("etcd client is closed")
                self._watches.add(watch)
            return watch

    def _retry_watch(self, stubs: EtcdStubs, error: KVUnavailableError, deadline: float) -> None:
        """After ``stubs`` could not open a watch: move on to the next endpoint and pause, or raise
        ``error`` when the deadline leaves no time for another try."""
        self._fail_over(stubs, error)
        if time.monotonic() + _RETRY_PAUSE_SECONDS >= deadline:
            raise error
        time.sleep(_RETRY_PAUSE_SECONDS)

    def _requested_progress_ordered(self, stubs: EtcdStubs, deadline: float, metadata: Metadata) -> bool:
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
                metadata=metadata,
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
            stubs = self.stubs()
            watch = EtcdWatch(self, stubs, create, None, metadata=self._metadata(stubs, self.timeout))
        except (KVUnavailableError, grpc.RpcError):
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
            stubs = [*self._stubs.values(), *self._bounded_stubs.values()]
            self._stubs.clear()
            self._bounded_stubs.clear()
        for watch in watches:
            watch.cancel()
        for each in stubs:
            each.channel.close()

    def __enter__(self) -> EtcdKV:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
