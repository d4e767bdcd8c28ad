"""The agent's watch loop: keep a ``RoutingTable`` equal to what etcd holds, through broken streams,
etcd restarts and compaction, without ever flushing what is already applied.

It cold-syncs with paged range reads pinned to one revision, then watches each prefix (provider
addresses, and the table or the routing domains this host serves) from that revision + 1, one thread
per stream. Each stream's thread applies its own batches to the table and calls ``apply`` with the
delta, under ``lock``, so the datapath sees one change at a time. Handing batches to a separate
applier thread cost a thread wake-up per batch, which was most of the agent's CPU per event. The
thread calling ``run`` syncs, handles the streams' errors (re-listing after compaction) and asks idle
streams for progress.

Resume rules:
- A broken stream (etcd restart, lost connection) is reopened by its own thread from the last
  revision it delivered + 1, with capped, jittered exponential backoff. The table is untouched.
- A compacted start revision makes the applier re-list at a new revision and ``reset`` the table:
  only what differs (including the deletes that compaction hid) reaches the datapath.
- The applied revision is the lowest revision every stream has reached (``WatchCursors``), so
  "applied R" always means every change up to R is in the table. Progress notifications move it on;
  the applier asks lagging and idle streams for one every ``progress_every`` seconds instead of
  waiting for etcd's periodic ones (note: etcd 3.5.1 answers such a request with a stale revision,
  so there the periodic notifications, ``--experimental-watch-progress-notify-interval``, decide).

The watch is never on /overland/v1/hosts/ (agents' status writes would wake every agent) nor on
/overland/v1/index/.
"""

from __future__ import annotations

import gc
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from services.common.errors import Unavailable
from services.common.kv import KV, KVCompactedError, KVUnavailableError, WatchBatch, WatchStream
from services.common.schema import StoreEntry, decode_snapshot, keys
from services.common.table import RoutingTable, TableDelta
from services.vswitch.config import BackoffPolicy

log = logging.getLogger(__name__)

ApplyCallback = Callable[[RoutingTable, TableDelta], None]

# Attempts to finish a paged read before a compaction overtakes it, before backing off.
_LIST_ATTEMPTS = 5
# How long the run loop waits for a stream error before it checks whether it was told to stop, and how
# long the streams must have been quiet before it asks them for progress.
_POLL_SECONDS = 0.2
# How long stopping waits for each stream thread.
_JOIN_SECONDS = 2.0


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a bulk load: the hundreds of thousands of objects a cold
    sync creates would otherwise trigger full collections that cost about 40% of the sync's CPU.
    Reference counting still frees everything that is not a cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def watch_prefixes(rdids: Sequence[str] = ()) -> tuple[bytes, ...]:
    """What an agent watches: every provider address, and the whole table or only its routing domains."""
    if not rdids:
        return (keys.PA_PREFIX, keys.TABLE_PREFIX)
    return (keys.PA_PREFIX, *(keys.domain_prefix(rdid) for rdid in sorted(set(rdids))))


@dataclass
class WatchCursors:
    """The revision each stream has delivered up to; the table is applied up to the lowest of them."""

    revisions: list[int]

    @classmethod
    def at(cls, revision: int, streams: int) -> WatchCursors:
        return cls([revision] * streams)

    def advance(self, index: int, revision: int) -> int:
        """Stream ``index`` has delivered everything up to ``revision``; returns the applied revision."""
        self.revisions[index] = max(self.revisions[index], revision)
        return self.applied

    @property
    def applied(self) -> int:
        return min(self.revisions)

    def lagging(self) -> list[int]:
        """Streams behind the newest one: asking them for progress lets the applied revision catch up."""
        newest = max(self.revisions)
        return [i for i, revision in enumerate(self.revisions) if revision < newest]


@dataclass(frozen=True)
class _StreamError:
    generation: int
    index: int
    error: BaseException


@dataclass
class WatcherStats:
    """What the watcher did, for status and tests."""

    syncs: int = 0
    resets_after_compaction: int = 0
    stream_breaks: int = 0
    batches: int = 0
    last_sync_seconds: float = 0.0
    last_sync_keys: int = 0
    rejected_keys: int = 0
    connected_streams: set[int] = field(default_factory=set)


class TableWatcher:
    """Keeps ``table`` in sync with etcd; ``run`` is the loop (see the module docstring)."""

    def __init__(
        self,
        kv: KV,
        prefixes: Sequence[bytes],
        table: RoutingTable,
        apply: ApplyCallback,
        *,
        lock: threading.RLock | None = None,
        page_size: int = 2000,
        backoff: BackoffPolicy | None = None,
        rng: random.Random | None = None,
        progress_every: float = 1.0,
    ):
        self._kv = kv
        self._prefixes = tuple(prefixes)
        self.table = table
        self._apply = apply
        self.lock = lock or threading.RLock()
        self._page_size = page_size
        # When idle, ask every stream for progress this often, so the applied revision catches up.
        self._progress_every = progress_every
        self._backoff = backoff or BackoffPolicy()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not secrets
        # Stream errors for the run loop; None only wakes it (``wake``).
        self._errors: queue.Queue[_StreamError | None] = queue.Queue()
        self._last_delivery = 0.0
        self._state_lock = threading.Lock()
        self._generation = 0
        self._streams: dict[int, WatchStream] = {}
        self._threads: list[threading.Thread] = []
        # Set when the current generation of streams is stopped, to wake their threads from backoff.
        self._streams_stopped = threading.Event()
        self._cursors = WatchCursors.at(0, len(self._prefixes))
        self._progress_asked: dict[int, float] = {}
        self._synced = False
        self.stats = WatcherStats()

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def connected(self) -> bool:
        """Whether the table is synced and every watch stream is up."""
        with self._state_lock:
            return self._synced and len(self.stats.connected_streams) == len(self._prefixes)

    @property
    def applied_revision(self) -> int:
        return self.table.revision

    @property
    def seen_revision(self) -> int:
        """The newest revision any watch stream has delivered (the applied one trails it)."""
        return max(self._cursors.revisions)

    def _rejected(self, count: int, named: Sequence[bytes]) -> None:
        """Count and log values left out of the table (the sync and the watch alike): the table
        goes on without them; 'overland policy check' finds and quarantines them."""
        if not count:
            return
        self.stats.rejected_keys += count
        log.warning(
            "rejected undecodable or inconsistent values",
            extra={"keys": count, "first": [key.decode(errors="replace") for key in named[:5]]},
        )

    # ----- cold sync -----

    def sync(self) -> TableDelta:
        """Read every prefix at one revision, page by page, and reset the table to it.

        Raises ``KVUnavailableError`` when etcd cannot be read, ``KVCompactedError`` when compaction
        kept overtaking the read.
        """
        started = time.monotonic()
        for attempt in range(_LIST_ATTEMPTS):
            try:
                with _collector_paused():
                    snapshot, revision, read = self._list()
            except KVCompactedError:
                log.info("table read overtaken by compaction, reading again", extra={"attempt": attempt})
                continue
            with self.lock, _collector_paused():
                delta = self.table.reset(snapshot, revision)
                self._apply(self.table, delta)
            self._cursors = WatchCursors.at(revision, len(self._prefixes))
            self._synced = True
            self.stats.syncs += 1
            self.stats.last_sync_seconds = time.monotonic() - started
            self.stats.last_sync_keys = read
            # Undecodable values never reached the table; inconsistent ones the reset dropped.
            self._rejected(read - len(snapshot) + len(delta.rejected), delta.rejected)
            log.info(
                "table synced",
                extra={
                    "revision": revision,
                    "keys": read,
                    "changed": len(delta),
                    "seconds": round(self.stats.last_sync_seconds, 3),
                },
            )
            return delta
        raise KVCompactedError("the table read kept being compacted", 0)

    def _list(self) -> tuple[dict[bytes, StoreEntry], int, int]:
        """The decoded snapshot, its revision and the number of keys read.

        The next page is fetched while this one is decoded: the fetch waits on etcd and gRPC outside
        the GIL, so a cold sync costs about the larger of the two rather than their sum.
        """
        revision = 0
        read = 0
        snapshot: dict[bytes, StoreEntry] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="table-read") as reader:
            for prefix in self._prefixes:
                page = self._kv.range(prefix, limit=self._page_size, revision=revision)
                # Every later page and prefix is pinned to the revision of the first read.
                revision = revision or page.revision
                while True:
                    following = None
                    if page.more and page.kvs:
                        following = reader.submit(
                            self._kv.range,
                            prefix,
                            start=page.kvs[-1].key + b"\0",
                            limit=self._page_size,
                            revision=revision,
                        )
                    read += len(page.kvs)
                    snapshot.update(decode_snapshot(page.kvs))
                    if following is None:
                        break
                    page = following.result()
        return snapshot, revision, read

    # ----- the loop -----

    def run(self, stop: threading.Event) -> None:
        """Sync, watch and apply until ``stop`` is set. Errors of etcd never end it; a bug does."""
        attempt = 0
        try:
            while not stop.is_set():
                if not self._synced:
                    try:
                        self.sync()
                    except (KVUnavailableError, KVCompactedError) as error:
                        delay = self._backoff.delay(attempt, self._rng.random())
                        log.warning(
                            "cannot read the table, keeping the one applied",
                            extra={"error": error.message, "retry_in": round(delay, 3)},
                        )
                        attempt += 1
                        stop.wait(delay)
                        continue
                    attempt = 0
                    self._start_streams()
                try:
                    failed = self._errors.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    # Writes outside the watched prefixes (host status, indexes) move the store revision
                    # without events; etcd's own progress notifications may be minutes apart.
                    if time.monotonic() - self._last_delivery >= _POLL_SECONDS:
                        self._ask_for_progress(range(len(self._prefixes)), self._progress_every)
                    continue
                if failed is not None and self._current(failed.generation):
                    self._handle_error(failed.index, failed.error)
        finally:
            self._stop_streams()

    def wake(self) -> None:
        """Make ``run`` look at its stop event now rather than at its next poll (a prompt stop)."""
        self._errors.put(None)

    def _handle_error(self, index: int, error: BaseException) -> None:
        if isinstance(error, KVCompactedError):
            log.warning(
                "watch start revision was compacted: re-listing",
                extra={"prefix": self._prefixes[index].decode(), "compacted": error.compact_revision},
            )
            self.stats.resets_after_compaction += 1
            self._synced = False
            self._stop_streams()
        elif isinstance(error, Unavailable):
            with self._state_lock:
                was_connected = index in self.stats.connected_streams
                self.stats.connected_streams.discard(index)
            self.stats.stream_breaks += 1
            if was_connected:
                log.warning(
                    "watch stream broken, resuming; forwarding goes on with the applied table",
                    extra={"prefix": self._prefixes[index].decode(), "error": error.message},
                )
        else:
            raise error

    def _deliver(self, generation: int, index: int, batch: WatchBatch) -> None:
        """Apply one stream's batch (called from that stream's thread); a stale generation's is dropped."""
        with self.lock:
            if not self._current(generation):
                return
            with self._state_lock:
                if index not in self.stats.connected_streams:
                    log.info("watch stream up", extra={"prefix": self._prefixes[index].decode()})
                    self.stats.connected_streams.add(index)
                applied = self._cursors.advance(index, batch.revision)
            self.stats.batches += 1
            self._last_delivery = time.monotonic()
            before = self.table.revision
            delta = self.table.update(batch.events, revision=applied)
            if delta or delta.rejected or self.table.revision != before:
                self._apply(self.table, delta)
            self._rejected(len(delta.rejected), delta.rejected)
            # Not after every batch: each answer wakes the stream's threads again, which costs more
            # than a slightly late applied revision (the changes themselves are applied now).
            self._ask_for_progress(self._cursors.lagging(), self._progress_every)

    def _ask_for_progress(self, indexes: Sequence[int], interval: float) -> None:
        now = time.monotonic()
        for index in indexes:
            if now - self._progress_asked.get(index, 0.0) < interval:
                continue
            stream = self._streams.get(index)
            if stream is None:
                continue
            self._progress_asked[index] = now
            try:
                stream.request_progress()
            except KVUnavailableError:
                # The stream's own thread sees the break and resumes it.
                continue

    # ----- streams -----

    def _start_streams(self) -> None:
        with self._state_lock:
            generation = self._generation
        self._streams_stopped = stopped = threading.Event()
        start = self.table.revision + 1
        self._threads = [
            threading.Thread(
                target=self._pump,
                args=(generation, index, prefix, start, stopped),
                name=f"watch-{prefix.decode()}",
                daemon=True,
            )
            for index, prefix in enumerate(self._prefixes)
        ]
        for thread in self._threads:
            thread.start()

    def _stop_streams(self) -> None:
        with self._state_lock:
            self._generation += 1
            streams = list(self._streams.values())
            self._streams.clear()
            self.stats.connected_streams.clear()
        self._streams_stopped.set()
        for stream in streams:
            stream.cancel()
        for thread in self._threads:
            thread.join(_JOIN_SECONDS)
        self._threads = []
        self._progress_asked.clear()

    def _current(self, generation: int) -> bool:
        with self._state_lock:
            return generation == self._generation

    def _pump(self, generation: int, index: int, prefix: bytes, start: int, stopped: threading.Event) -> None:
        """One stream's thread: deliver batches in order, reopen from the last delivered revision + 1."""
        next_revision = start
        attempt = 0
        try:
            while not stopped.is_set() and self._current(generation):
                try:
                    stream = self._kv.watch(prefix, next_revision)
                    with self._state_lock:
                        if generation != self._generation:
                            stream.cancel()
                            return
                        self._streams[index] = stream
                    # An early progress batch says "connected" without waiting for the periodic one.
                    stream.request_progress()
                    for batch in stream:
                        self._deliver(generation, index, batch)
                        next_revision = batch.revision + 1
                        attempt = 0
                    if stopped.is_set() or not self._current(generation):
                        return
                    raise KVUnavailableError("watch stream ended")
                except KVCompactedError as error:
                    self._errors.put(_StreamError(generation, index, error))
                    return
                except KVUnavailableError as error:
                    self._errors.put(_StreamError(generation, index, error))
                    stopped.wait(self._backoff.delay(attempt, self._rng.random()))
                    attempt += 1
        except Exception as error:  # noqa: BLE001 - handed to the run loop, which re-raises it
            # A bug (in the stream or in applying) must not leave a stream dead in silence: the run loop
            # re-raises it.
            self._errors.put(_StreamError(generation, index, error))
