"""``EtcdWatch``: one etcd watch on its own bidirectional ``Watch`` stream, read as ``WatchBatch``es.

A broken stream raises ``KVUnavailableError`` instead of ending silently, compaction raises
``KVCompactedError`` with etcd's compact revision, and a resume point never moves back nor past events
an old etcd may still send after answering a progress request. ``EtcdKV.watch`` (etcd_kv.py) opens
these; the messages are read by etcd_messages.py.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Protocol

import grpc
from etcd3 import etcdrpc

from services.common.etcd_messages import (
    REQUIRE_LEADER,
    EtcdStubs,
    denied_message,
    map_grpc_error,
    watch_batch,
    where,
)
from services.common.kv import (
    KVCompactedError,
    KVPermissionDeniedError,
    KVUnavailableError,
    KVWatchOverflowError,
    WatchBacklog,
    WatchBatch,
)

# The watch id etcd puts on its answer to a progress request (it answers for the whole stream).
REQUESTED_PROGRESS_ID = -1


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


class WatchOwner(Protocol):
    """The client a watch belongs to (``EtcdKV``): whether its calls wait for a channel to
    reconnect, the user it calls as (for error messages), and the set of open watches it closes
    with itself, which a cancelled watch leaves."""

    wait_for_ready: bool
    user: str | None

    def _forget(self, watch: EtcdWatch) -> None: ...


_END = object()
_NOTHING = object()
# Queued in place of everything held when the backlog outgrew its limit.
_OVERFLOW = object()
# The most already-arrived responses one batch merges (bounds a batch's size).
_MAX_MERGED_RESPONSES = 256


def _size(response: Any) -> int:
    """A response's size on the wire, whether it is held serialized or parsed."""
    return len(response) if isinstance(response, bytes) else int(response.ByteSize())


class _Backlog:
    """What an ``EtcdWatch`` holds for its consumer, in serialized response bytes, and the reader's
    wait for room (see ``WatchBacklog``). While the reader waits it reads nothing from etcd, whose
    gRPC flow control then leaves the rest with etcd."""

    def __init__(self, limit: WatchBacklog) -> None:
        self.limit = limit
        self._cond = threading.Condition()
        self._bytes = 0
        self._takes = 0
        self._closed = False

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes

    def admit(self, size: int) -> bool:
        """Count ``size`` more bytes in once they fit; False when the consumer took nothing for the
        stall time meanwhile (or the watch ended). A response that arrives when nothing is held
        always fits, however large."""
        with self._cond:
            stall = self.limit.stall_seconds
            deadline = time.monotonic() + stall
            takes = self._takes
            while self._bytes and self._bytes + size > self.limit.max_bytes and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
                if self._takes != takes:
                    # The consumer is reading, however slowly: its stall clock starts again.
                    takes, deadline = self._takes, time.monotonic() + stall
            if self._closed:
                return False
            self._bytes += size
            return True

    def taken(self, size: int) -> None:
        with self._cond:
            self._bytes -= size
            self._takes += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing is held any more; a waiting reader gives up."""
        with self._cond:
            self._closed = True
            self._bytes = 0
            self._cond.notify_all()


class EtcdWatch:
    """One etcd watch on its own bidirectional stream; see ``WatchStream``.

    A reader thread moves responses into a queue, so that waiting for the next one can have a
    deadline (creation) or an idle limit, and ``cancel()`` from any thread ends the iteration.
    With a ``backlog`` (see ``WatchBacklog``), the reader stops reading from etcd while the queue is
    full, and ends the watch when its consumer stopped: it drops what is queued at once, so a
    consumer that stopped reading costs no more memory than the limit.
    """

    def __init__(
        self,
        owner: WatchOwner,
        stubs: EtcdStubs,
        create: Any,
        idle_timeout: float | None,
        *,
        trust_requested_progress: bool = True,
        backlog: WatchBacklog | None = None,
        metadata: tuple[tuple[str, str], ...] = REQUIRE_LEADER,
    ) -> None:
        self._owner = owner
        self._stubs_endpoint = stubs.endpoint
        self._where = where(stubs.endpoint, "watch")
        self._backlog = _Backlog(backlog) if backlog is not None else None
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
                self._request_stream(), wait_for_ready=owner.wait_for_ready, metadata=metadata
            )
        except ValueError as error:
            raise KVUnavailableError(f"{self._where}: {error}") from error
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
                if self._backlog is not None and not self._backlog.admit(_size(response)):
                    if not self._cancelled.is_set():
                        self._overflow()
                    return
                self._responses.put(response)
        except grpc.RpcError as error:
            self._responses.put(error)
        self._responses.put(_END)

    def _overflow(self) -> None:
        """Stop reading from etcd and drop everything queued; the consumer's next take raises."""
        self._requests.put(_END)
        self._call.cancel()
        while True:
            try:
                self._responses.get_nowait()
            except queue.Empty:
                break
        if self._backlog is not None:
            self._backlog.close()
        self._responses.put(_OVERFLOW)

    @property
    def backlog_bytes(self) -> int:
        """What the watch holds for its consumer now (counted only with a ``backlog``)."""
        return self._backlog.bytes if self._backlog is not None else 0

    def _taken(self, item: Any) -> Any:
        """``item``, just taken from the queue, no longer counts into the backlog; a response held
        serialized (``RawWatchStub``) is parsed now."""
        counted = item is not _END and item is not _OVERFLOW and not isinstance(item, grpc.RpcError)
        if self._backlog is not None and counted:
            self._backlog.taken(_size(item))
        if isinstance(item, bytes):
            return etcdrpc.WatchResponse.FromString(item)
        return item

    def _take(self, timeout: float | None) -> Any:
        """The next response, or raise what ended the stream. None once cancelled."""
        item, self._held = self._held, _NOTHING
        if item is _NOTHING:
            try:
                item = self._taken(self._responses.get(timeout=timeout))
            except queue.Empty:
                self.cancel()
                raise KVUnavailableError(f"{self._where}: no response within {timeout:.3g}s") from None
        if self._cancelled.is_set():
            return None
        if item is _OVERFLOW:
            self.cancel()
            limit = self._backlog.limit if self._backlog is not None else WatchBacklog(0, 0)
            raise KVWatchOverflowError(
                f"{self._where}: its consumer took nothing for {limit.stall_seconds:g} s with "
                f"{limit.max_bytes} bytes waiting; it has every event up to revision {self._delivered}",
                self._delivered,
            )
        if isinstance(item, grpc.RpcError):
            self.cancel()
            raise map_grpc_error(item, "watch", self._stubs_endpoint, self._owner.user) from item
        if item is _END:
            self.cancel()
            raise KVUnavailableError(f"{self._where}: the stream ended")
        if item.compact_revision:
            self.cancel()
            raise KVCompactedError(
                f"{self._where}: revision compacted (at {item.compact_revision})", item.compact_revision
            )
        if item.canceled:
            self.cancel()
            if "permission denied" in item.cancel_reason:
                raise KVPermissionDeniedError(
                    denied_message(self._stubs_endpoint, "watch", self._owner.user, item.cancel_reason)
                )
            raise KVUnavailableError(f"{self._where}: cancelled by etcd: {item.cancel_reason or 'no reason'}")
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
            item = self._taken(self._responses.get_nowait())
        except queue.Empty:
            return None
        ends = item is _END or item is _OVERFLOW or isinstance(item, grpc.RpcError)
        if ends or item.compact_revision or item.canceled:
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
        if self._backlog is not None:
            # Wake a reader waiting for room.
            self._backlog.close()
        self._requests.put(_END)
        self._call.cancel()
        # Wake an iteration blocked on the queue; it sees the flag and ends.
        self._responses.put(_END)
        self._owner._forget(self)

    def break_stream(self) -> None:
        """Break the gRPC stream under the watch without cancelling it (for tests): the iteration
        raises KVUnavailableError, as it does when the connection is lost."""
        self._call.cancel()
