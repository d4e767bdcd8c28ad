"""EtcdWatch's reading of a Watch stream, on a scripted stream instead of a real etcd: resume
points, compaction, cancellation by etcd, a stream that ends or breaks, a consumer that falls behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2

from services.common.etcd_kv import EtcdKV
from services.common.etcd_messages import REQUIRE_LEADER, EtcdStubs
from services.common.etcd_watch import EtcdWatch, requested_progress_is_ordered
from services.common.kv import KVCompactedError, KVUnavailableError, KVWatchOverflowError, WatchBacklog

# A watch reads only its stub, never the channel the stubs were made on.
NO_CHANNEL = cast(grpc.Channel, None)


class BrokenStream(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Socket closed"


class ScriptedWatchStub:
    """Answers a Watch call with fixed responses, then ends (or fails with ``error``)."""

    def __init__(self, responses: list[Any], error: grpc.RpcError | None = None):
        self.responses, self.error = responses, error
        self.metadata: Any = None

    def Watch(self, requests: Iterator[Any], **options: Any) -> Any:
        self.metadata = options.get("metadata")
        first = next(requests)
        assert first.create_request.key == b"/w/"
        return ScriptedCall(self.responses, self.error)


class ScriptedCall:
    def __init__(self, responses: list[Any], error: grpc.RpcError | None):
        self.responses, self.error = responses, error

    def __iter__(self) -> Iterator[Any]:
        for response in self.responses:
            # An event in the script holds the stream until the test sets it.
            if isinstance(response, threading.Event):
                assert response.wait(10)
                continue
            yield response
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        pass


def header(revision: int) -> Any:
    return etcdrpc.ResponseHeader(revision=revision)


def created(revision: int = 1) -> Any:
    return etcdrpc.WatchResponse(header=header(revision), created=True)


def put_event(key: bytes, revision: int) -> Any:
    return kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=key, value=b"v", mod_revision=revision))


def open_watch(
    responses: list[Any],
    error: grpc.RpcError | None = None,
    *,
    start: int = 0,
    trusted: bool = True,
    backlog: WatchBacklog | None = None,
) -> tuple[EtcdWatch, ScriptedWatchStub]:
    stub = ScriptedWatchStub(responses, error)
    owner = EtcdKV("127.0.0.1:2379")
    create = etcdrpc.WatchCreateRequest(key=b"/w/", range_end=b"/w0", start_revision=start)
    stubs = EtcdStubs(channel=NO_CHANNEL, kv=None, lease=None, watch=stub)
    watch = EtcdWatch(owner, stubs, create, 5.0, trust_requested_progress=trusted, backlog=backlog)
    watch.wait_created(5.0)
    return watch, stub


def test_batches_resume_after_the_last_event_and_progress_never_moves_back() -> None:
    watch, stub = open_watch(
        [
            created(3),
            etcdrpc.WatchResponse(header=header(7), events=[put_event(b"/w/a", 5), put_event(b"/w/b", 6)]),
            # An old etcd may answer a progress request with a revision below what it already sent.
            etcdrpc.WatchResponse(header=header(4)),
            etcdrpc.WatchResponse(header=header(9)),
        ]
    )
    assert stub.metadata == REQUIRE_LEADER
    batches = [watch.next_batch(5.0) for _ in range(3)]
    assert [(b.revision, b.progress) for b in batches if b] == [(6, False), (6, True), (9, True)]
    watch.cancel()


def test_an_old_etcds_answer_to_a_progress_request_does_not_move_the_resume_point() -> None:
    # etcd 3.5.1 answers a progress request at once with its current revision (10), before the
    # events of a watcher that is still catching up (etcd-io/etcd#15220).
    watch, _ = open_watch(
        [
            created(10),
            etcdrpc.WatchResponse(header=header(10), watch_id=-1),
            etcdrpc.WatchResponse(header=header(10), events=[put_event(b"/w/a", 7)]),
            etcdrpc.WatchResponse(header=header(10), watch_id=0),
        ],
        start=3,
        trusted=False,
    )
    batches = [watch.next_batch(5.0) for _ in range(3)]
    assert [(b.revision, b.progress) for b in batches if b] == [(2, True), (7, False), (10, True)]
    watch.cancel()


def test_a_watch_from_now_starts_at_its_creation_revision() -> None:
    watch, _ = open_watch([created(12), etcdrpc.WatchResponse(header=header(3), watch_id=-1)], trusted=False)
    batch = watch.next_batch(5.0)
    assert batch is not None
    assert (batch.revision, batch.progress) == (12, True)
    watch.cancel()


@pytest.mark.parametrize(
    ("version", "ordered"),
    [
        ("3.5.1", False),
        ("3.5.7", False),
        ("3.5.8", True),
        ("3.4.23", False),
        ("3.4.24", True),
        ("3.6.0", True),
        ("3.5.10-rc.0", True),
        ("garbage", False),
        ("3.5", False),
    ],
)
def test_which_etcd_versions_answer_progress_requests_in_order(version: str, ordered: bool) -> None:
    assert requested_progress_is_ordered(version) is ordered


def test_compaction_raises_with_the_compact_revision() -> None:
    watch, _ = open_watch(
        [created(), etcdrpc.WatchResponse(header=header(9), canceled=True, compact_revision=8)]
    )
    with pytest.raises(KVCompactedError) as caught:
        list(watch)
    assert caught.value.compact_revision == 8


def test_cancellation_by_etcd_is_unavailable() -> None:
    watch, _ = open_watch(
        [created(), etcdrpc.WatchResponse(header=header(9), canceled=True, cancel_reason="no leader")]
    )
    with pytest.raises(KVUnavailableError, match="no leader"):
        list(watch)


def test_a_stream_that_ends_or_breaks_is_unavailable_not_a_silent_end() -> None:
    ended, _ = open_watch([created()])
    with pytest.raises(KVUnavailableError, match="ended"):
        list(ended)
    broken, _ = open_watch([created()], BrokenStream())
    with pytest.raises(KVUnavailableError, match="Socket closed"):
        list(broken)


class SilentCall:
    """A stream that never answers until it is cancelled, like a hung etcd."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        self.cancelled.wait(30)
        raise BrokenStream()

    def cancel(self) -> None:
        self.cancelled.set()


def test_no_created_response_within_the_deadline_is_unavailable() -> None:
    call = SilentCall()
    stub = ScriptedWatchStub([])
    stub.Watch = lambda requests, **options: call  # type: ignore[method-assign]
    create = etcdrpc.WatchCreateRequest(key=b"/w/")
    watch = EtcdWatch(EtcdKV("127.0.0.1:2379"), EtcdStubs(NO_CHANNEL, None, None, stub), create, None)
    with pytest.raises(KVUnavailableError):
        watch.wait_created(0.2)
    assert call.cancelled.is_set()


def _events(first: int, count: int) -> list[Any]:
    return [
        etcdrpc.WatchResponse(header=header(revision), events=[put_event(b"/w/k", revision)])
        for revision in range(first, first + count)
    ]


def _wire(responses: list[Any], raw: bool) -> list[Any]:
    """The responses as a RawWatchStub gives them (serialized) with ``raw``, else as parsed."""
    return [r.SerializeToString() if raw and not isinstance(r, threading.Event) else r for r in responses]


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "serialized"])
def test_a_consumer_that_stops_taking_with_a_full_backlog_gets_an_overflow_with_its_resume_point(
    raw: bool,
) -> None:
    behind = threading.Event()
    limit = WatchBacklog(max_bytes=4 * _events(10, 1)[0].ByteSize(), stall_seconds=0.2)
    script = _wire([created(3), *_events(9, 1), behind, *_events(10, 20)], raw)
    watch, _ = open_watch(script, backlog=limit)
    batch = watch.next_batch(5.0)
    assert batch is not None
    assert batch.revision == 9
    # The consumer stops taking while twenty responses arrive: the reader holds four, waits for room,
    # and past the stall time ends the watch instead of holding more.
    behind.set()
    watch._reader.join(10)
    assert not watch._reader.is_alive()
    assert watch.backlog_bytes == 0
    with pytest.raises(KVWatchOverflowError) as overflow:
        watch.next_batch(5.0)
    # Everything up to 9 was delivered: the consumer watches again from 10.
    assert overflow.value.revision == 9
    assert f"{limit.max_bytes} bytes" in overflow.value.message


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "serialized"])
def test_a_consumer_that_keeps_taking_is_never_ended_however_slow_or_large_the_responses(raw: bool) -> None:
    # Twenty responses ready at once (a watch catching up), each larger than the whole limit: the
    # reader holds one at a time and waits for room, and the consumer takes them at its own pace.
    script = _wire([created(3), *_events(5, 20)], raw)
    watch, _ = open_watch(script, backlog=WatchBacklog(max_bytes=1, stall_seconds=5))
    revisions: list[int] = []
    while len(revisions) < 20:
        batch = watch.next_batch(5.0, merge=True)
        assert batch is not None
        revisions.append(batch.revision)
        assert watch.backlog_bytes <= _events(5, 1)[0].ByteSize()
        time.sleep(0.01)
    assert revisions == list(range(5, 25))
    watch.cancel()


def test_cancel_wakes_a_reader_waiting_for_room() -> None:
    watch, _ = open_watch([created(3), *_events(5, 3)], backlog=WatchBacklog(max_bytes=1, stall_seconds=60))
    while watch.backlog_bytes == 0:
        time.sleep(0.01)
    watch.cancel()
    watch._reader.join(10)
    assert not watch._reader.is_alive()
