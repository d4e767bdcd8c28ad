"""EtcdKV's pure parts: protobuf requests built from the KV types, responses read back, and the
mapping of gRPC failures to KV errors."""

from __future__ import annotations

import grpc
import pytest
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.common.etcd_kv import parse_endpoint
from services.common.etcd_messages import (
    KVInvalidTokenError,
    KVServerError,
    KVSpaceExceededError,
    compare_message,
    map_grpc_error,
    never_sent,
    op_message,
    span,
    txn_request,
    txn_result,
    watch_batch,
)
from services.common.kv import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    EventType,
    Get,
    KVAuthenticationError,
    KVCompactedError,
    KVLeaseNotFoundError,
    KVPermissionDeniedError,
    KVRequestError,
    KVTooManyOpsError,
    KVUnavailableError,
    Op,
    Put,
    prefix_end,
)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_span_of_a_key_a_prefix_and_the_whole_keyspace() -> None:
    assert span(b"/k", False) == (b"/k", b"")
    assert span(b"/p/", True) == (b"/p/", b"/p0")
    assert span(b"/p/", True, start=b"/p/m") == (b"/p/m", b"/p0")
    # A start before the prefix does not widen the range.
    assert span(b"/p/", True, start=b"/a") == (b"/p/", b"/p0")
    assert span(b"", True) == (b"\0", b"\0")


@given(st.binary(min_size=1, max_size=6), st.binary(max_size=6))
def test_prefix_end_bounds_exactly_the_keys_with_the_prefix(prefix: bytes, suffix: bytes) -> None:
    end = prefix_end(prefix)
    assert prefix + suffix < end or end == b"\0"
    assert prefix < end or end == b"\0"


@pytest.mark.parametrize(
    ("compare", "field", "value", "target"),
    [
        (Compare.absent(b"/k"), "version", 0, etcdrpc.Compare.VERSION),
        (Compare.mod_revision_is(b"/k", 7), "mod_revision", 7, etcdrpc.Compare.MOD),
        (Compare.value_is(b"/k", b"v"), "value", b"v", etcdrpc.Compare.VALUE),
        (
            Compare(b"/k", CompareTarget.CREATE, CompareOp.LESS, 3),
            "create_revision",
            3,
            etcdrpc.Compare.CREATE,
        ),
    ],
)
def test_compare_messages(compare: Compare, field: str, value: object, target: int) -> None:
    message = compare_message(compare)
    assert message.key == b"/k"
    assert message.target == target
    assert getattr(message, field) == value
    expected_result = {
        CompareOp.EQUAL: etcdrpc.Compare.EQUAL,
        CompareOp.LESS: etcdrpc.Compare.LESS,
        CompareOp.GREATER: etcdrpc.Compare.GREATER,
    }[compare.op]
    assert message.result == expected_result


def test_compare_operand_must_match_its_target() -> None:
    with pytest.raises(KVRequestError):
        compare_message(Compare(b"/k", CompareTarget.VALUE, CompareOp.EQUAL, 1))
    with pytest.raises(KVRequestError):
        compare_message(Compare(b"/k", CompareTarget.MOD, CompareOp.EQUAL, b"1"))


def test_op_messages() -> None:
    put = op_message(Put(b"/k", b"v", lease=9)).request_put
    assert (put.key, put.value, put.lease) == (b"/k", b"v", 9)
    delete = op_message(Delete(b"/d/", prefix=True)).request_delete_range
    assert (delete.key, delete.range_end) == (b"/d/", b"/d0")
    get = op_message(Get(b"/g")).request_range
    assert (get.key, get.range_end) == (b"/g", b"")
    request = txn_request([Compare.absent(b"/k")], [Put(b"/k", b"v")], [Get(b"/k")])
    assert (len(request.compare), len(request.success), len(request.failure)) == (1, 1, 1)


def test_txn_result_reads_range_responses_when_the_branch_that_ran_reads() -> None:
    kv = kv_pb2.KeyValue(key=b"/k", value=b"v", create_revision=2, mod_revision=3, version=2, lease=0)
    response = etcdrpc.TxnResponse(
        header=etcdrpc.ResponseHeader(revision=5),
        succeeded=False,
        responses=[
            etcdrpc.ResponseOp(response_put=etcdrpc.PutResponse()),
            etcdrpc.ResponseOp(response_range=etcdrpc.RangeResponse(kvs=[kv])),
        ],
    )
    ran_ops: list[Op] = [Put(b"/a", b"1"), Get(b"/k")]
    for ran in (None, ran_ops):
        result = txn_result(response, ran)
        assert (result.succeeded, result.revision) == (False, 5)
        assert result.responses[0] == ()
        read = [(item.key, item.mod_revision, item.version) for item in result.responses[1]]
        assert read == [(b"/k", 3, 2)]
    # Writes only: one empty response per op, without looking into them.
    assert txn_result(response, [Put(b"/a", b"1"), Delete(b"/b")]).responses == ((), ())


def test_watch_batches_resume_after_their_last_event_or_at_the_progress_revision() -> None:
    events = [
        kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=b"/a", value=b"1", mod_revision=4)),
        kv_pb2.Event(
            type=kv_pb2.Event.DELETE,
            kv=kv_pb2.KeyValue(key=b"/b", mod_revision=6),
            prev_kv=kv_pb2.KeyValue(key=b"/b", value=b"old", mod_revision=2),
        ),
    ]
    batch = watch_batch(etcdrpc.WatchResponse(header=etcdrpc.ResponseHeader(revision=9), events=events))
    assert batch.revision == 6
    assert not batch.progress
    assert [e.type for e in batch.events] == [EventType.PUT, EventType.DELETE]
    assert batch.events[0].prev_kv is None
    assert batch.events[1].prev_kv is not None
    assert batch.events[1].prev_kv.value == b"old"
    progress = watch_batch(etcdrpc.WatchResponse(header=etcdrpc.ResponseHeader(revision=9)))
    assert (progress.events, progress.revision, progress.progress) == ((), 9, True)


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", KVUnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", KVUnavailableError),
        (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
            KVCompactedError,
        ),
        (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
            KVRequestError,
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request",
            KVTooManyOpsError,
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request", KVRequestError),
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", KVLeaseNotFoundError),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
            KVSpaceExceededError,
        ),
        (grpc.StatusCode.UNKNOWN, "etcdserver: no leader", KVUnavailableError),
        (grpc.StatusCode.UNKNOWN, "context deadline exceeded", KVUnavailableError),
        (grpc.StatusCode.INTERNAL, "context deadline exceeded", KVUnavailableError),
        (grpc.StatusCode.UNKNOWN, "etcdserver: request timed out", KVUnavailableError),
        (grpc.StatusCode.UNKNOWN, "etcdserver: leader changed", KVUnavailableError),
        (grpc.StatusCode.INTERNAL, "something else", KVServerError),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", KVPermissionDeniedError),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", KVInvalidTokenError),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: user name is empty", KVAuthenticationError),
        (grpc.StatusCode.UNKNOWN, "Stream removed", KVUnavailableError),
    ],
)
def test_grpc_errors_map_to_kv_errors(code: grpc.StatusCode, details: str, expected: type) -> None:
    error = map_grpc_error(FakeRpcError(code, details), "call")
    assert type(error) is expected
    assert details in error.message


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"),
        (grpc.StatusCode.INTERNAL, "something else"),
    ],
)
def test_every_error_names_the_endpoint_that_failed(code: grpc.StatusCode, details: str) -> None:
    error = map_grpc_error(FakeRpcError(code, details), "txn", "198.18.0.5:2379", "vswitch-h1")
    assert error.message.startswith("etcd 198.18.0.5:2379 txn: ")


def test_a_refused_user_is_named() -> None:
    denied = map_grpc_error(
        FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
        "txn",
        "e:1",
        "policy",
    )
    assert isinstance(denied, KVPermissionDeniedError)
    assert "permission denied to user 'policy'" in denied.message
    failed = map_grpc_error(
        FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID"),
        "Authenticate",
        "e:1",
        "policy",
    )
    assert isinstance(failed, KVAuthenticationError)
    assert "did not accept the password of user 'policy'" in failed.message
    anonymous = map_grpc_error(
        FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"), "get", "e:1"
    )
    assert "no --etcd-user" in anonymous.message


def test_only_refused_calls_count_as_never_sent() -> None:
    assert never_sent(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; x"))
    assert never_sent(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"))
    assert not never_sent(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert not never_sent(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


def test_endpoints_accept_urls() -> None:
    assert parse_endpoint("http://127.0.0.1:2379") == "127.0.0.1:2379"
    assert parse_endpoint("https://etcd.example:2379/") == "etcd.example:2379"
    with pytest.raises(InvalidArgument):
        parse_endpoint("127.0.0.1")
