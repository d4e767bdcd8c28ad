"""The message codec of the etcd client: etcd's gRPC API (the stubs of a channel, the "require leader"
metadata) and pure functions between the values of the ``KV`` interface and etcd's protobuf messages.

Requests are built in place from ``Compare``/``Op`` values (``txn_request``), answers read back into
``TxnResult``, ``KeyValue`` and ``WatchBatch``; gRPC failures become the errors of
``services.common.kv`` (``map_grpc_error``): no connection, UNAVAILABLE or a missed deadline ->
``KVUnavailableError``; a compacted revision -> ``KVCompactedError``; "too many operations in txn
request" -> ``KVTooManyOpsError``; a refused user -> ``KVPermissionDeniedError``; and so on. Every
message names the endpoint that failed (and the user, where etcd refused one). Nothing here does
I/O: the client (etcd_kv.py) and the watch stream (etcd_watch.py) do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2

from services.common.errors import ResourceExhausted, ServiceError
from services.common.kv import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    Get,
    KeyValue,
    KVAuthenticationError,
    KVCompactedError,
    KVLeaseNotFoundError,
    KVPermissionDeniedError,
    KVRequestError,
    KVTooManyOpsError,
    KVUnavailableError,
    Op,
    Put,
    TxnResult,
    WatchBatch,
    WatchEvent,
    prefix_end,
)

_UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)

# etcd's "require leader" metadata: a member that has lost its leader (cut off from the majority)
# refuses calls at once with "no leader" and cancels open watches, instead of serving stale reads
# and watches that silently stop.
REQUIRE_LEADER = (("hasleader", "true"),)
# What a call that surely never took effect fails with: no connection to send it on, or refused
# by a member without a leader before anything was done.
_NOT_SENT = (
    "failed to connect to all addresses",
    "Connection refused",
    "DNS resolution failed",
    "etcdserver: no leader",
)

# What etcd says about a token it no longer knows (it expired unused, or etcd restarted and forgot its
# simple tokens): authenticate again and repeat the call.
_INVALID_TOKEN = "invalid auth token"  # noqa: S105 - etcd's message, not a secret
_AUTH_FAILED = "authentication failed"

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
    # Over TLS, a member that shuts down resets its streams: gRPC reports UNKNOWN "Stream removed"
    # where a plaintext connection reports UNAVAILABLE. Either way the connection is gone.
    "Stream removed",
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


class KVServerError(ServiceError):
    """etcd failed a request for a reason none of the other KV errors names."""


class KVInvalidTokenError(KVAuthenticationError):
    """etcd no longer knows the call's auth token: the client authenticates again and repeats it."""


@dataclass(frozen=True)
class EtcdStubs:
    """The stubs of one channel, made once: making a stub builds a callable per method. ``endpoint``
    is the member they reach, for error messages."""

    channel: grpc.Channel
    kv: Any
    lease: Any
    watch: Any
    maintenance: Any = None
    auth: Any = None
    endpoint: str = ""

    @classmethod
    def on(cls, channel: grpc.Channel, endpoint: str = "", *, raw_watch: bool = False) -> EtcdStubs:
        """``raw_watch``: the Watch stub leaves responses as bytes (``RawWatchStub``)."""
        return cls(
            channel,
            etcdrpc.KVStub(channel),
            etcdrpc.LeaseStub(channel),
            RawWatchStub(channel) if raw_watch else etcdrpc.WatchStub(channel),
            etcdrpc.MaintenanceStub(channel),
            etcdrpc.AuthStub(channel),
            endpoint,
        )


class RawWatchStub:
    """etcd's Watch method with its responses left serialized: a watch that bounds what it holds for
    its consumer counts and keeps them as bytes, and parses each one when it is taken (a parsed
    response costs several times its size in memory)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Watch = channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=etcdrpc.WatchRequest.SerializeToString,
            response_deserializer=None,
        )


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata of every call: "require leader", and the auth token when there is one."""
    return REQUIRE_LEADER if token is None else (*REQUIRE_LEADER, ("token", token))


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
    if compare.prefix:
        message.range_end = prefix_end(compare.key)


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


def where(endpoint: str, what: str) -> str:
    """``etcd 127.0.0.1:2379 range``: the start of every message about a failed call."""
    return f"etcd {endpoint} {what}" if endpoint else f"etcd {what}"


def _user(user: str | None) -> str:
    # Without a token etcd takes the client certificate's CN, if any, as the user.
    return f"user {user!r}" if user else "no user (no --etcd-user given; etcd took the certificate's CN)"


def map_grpc_error(
    error: grpc.RpcError, what: str, endpoint: str = "", user: str | None = None
) -> ServiceError:
    """The KV error for a failed etcd call to ``endpoint`` made as ``user``. Compaction errors get
    compact revision 0 here; the caller fills it in when it can learn it."""
    code, details = status_of(error)
    message = f"{where(endpoint, what)}: {details or code.name}"
    if code is grpc.StatusCode.PERMISSION_DENIED or "permission denied" in details:
        return KVPermissionDeniedError(denied_message(endpoint, what, user, details))
    if code is grpc.StatusCode.UNAUTHENTICATED and _INVALID_TOKEN in details:
        return KVInvalidTokenError(message)
    if _AUTH_FAILED in details:
        return KVAuthenticationError(
            f"{where(endpoint, what)}: etcd did not accept the password of {_user(user)} (unknown user or "
            "wrong password)"
        )
    if code is grpc.StatusCode.UNAUTHENTICATED or "user name is empty" in details:
        return KVAuthenticationError(f"{message}: etcd wants a user (--etcd-user and its password)")
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


def denied_message(endpoint: str, what: str, user: str | None, details: str) -> str:
    return (
        f"{where(endpoint, what)}: {details} to {_user(user)}: its etcd roles do not cover these keys "
        "(docs/security.md lists each role's prefixes)"
    )


def never_sent(error: grpc.RpcError) -> bool:
    """Whether a failed call surely never took effect (no connection, or refused by a member
    without a leader), so even a write may be sent again."""
    _, details = status_of(error)
    return any(sign in details for sign in _NOT_SENT)
