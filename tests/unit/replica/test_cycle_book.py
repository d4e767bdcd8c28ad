"""The cycles of a VM as the operator sees them (``primary/cycles.py``): ids that never repeat across
restarts, ReplicateNow's coalescing, and what a watcher is told."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.errors import ReplicationNotFound
from services.replica.primary.cycles import ID_BLOCK, KEPT_CYCLES, CycleBook


class Recorder:
    """What ``replication.json`` would hold: the end of the reserved id block, saved on reserve."""

    def __init__(self) -> None:
        self.saved = 0
        self.book: CycleBook | None = None

    def open(self) -> CycleBook:
        self.book = CycleBook("vm1", self.saved, on_reserve=self.save)
        return self.book

    def save(self) -> None:
        assert self.book is not None
        self.saved = self.book.reserved


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2 * ID_BLOCK + 5), min_size=1, max_size=5))
def test_ids_increase_across_restarts_without_a_save_per_cycle(runs: list[int]) -> None:
    recorder = Recorder()
    seen: list[int] = []
    saves = 0
    for count in runs:
        book = recorder.open()
        before = recorder.saved
        for _ in range(count):
            run = book.start("delta")
            book.finish(run, sequence=1)
            seen.append(run.id)
        saves += recorder.saved != before
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    # One save per block of ids at most (plus the first cycle after each restart).
    assert saves <= len(runs) + sum(runs) // ID_BLOCK


def test_replicate_now_coalesces_until_the_cycle_starts() -> None:
    book = CycleBook("vm1")
    first = book.request()
    assert book.request() is first
    assert first.state == replica_pb2.CYCLE_STATE_QUEUED
    assert first.requested
    running = book.start("initial")
    assert running is first
    assert running.state == replica_pb2.CYCLE_STATE_RUNNING
    # Asked while one runs: a new cycle, after it.
    second = book.request()
    assert second.id == first.id + 1
    assert book.latest() is first
    book.finish(first, sequence=4)
    assert (first.state, first.sequence) == (replica_pb2.CYCLE_STATE_SUCCEEDED, 4)
    assert book.queued is second
    scheduled = book.start("delta")
    assert scheduled is second
    book.finish(scheduled, error_code="UNAVAILABLE", error="DR site unreachable")
    assert book.find(second.id).to_proto().error_code == "UNAVAILABLE"
    assert book.start("delta").requested is False


def test_find_knows_the_last_cycles_only() -> None:
    book = CycleBook("vm1")
    with pytest.raises(ReplicationNotFound, match="no cycle yet"):
        book.find(0)
    ids = []
    for _ in range(KEPT_CYCLES + 3):
        run = book.start("delta")
        book.finish(run, sequence=run.id)
        ids.append(run.id)
    assert book.find(0).id == ids[-1]
    assert book.find(ids[-KEPT_CYCLES]).id == ids[-KEPT_CYCLES]
    with pytest.raises(ReplicationNotFound, match="no cycle 1 "):
        book.find(ids[0])


def test_a_watcher_sees_progress_and_the_outcome_then_the_stream_ends() -> None:
    book = CycleBook("vm1")
    queued = book.request()
    seen: list[replica_pb2.Cycle] = []
    watching = threading.Thread(target=lambda: seen.extend(book.watch(queued.id, lambda: True)))
    watching.start()
    run = book.start("delta")
    run.progress.plan(4096)
    run.progress.add(1024)
    book.changed()
    run.progress.add(3072)
    book.finish(run, sequence=9)
    watching.join(timeout=30)
    assert not watching.is_alive()
    states = [c.state for c in seen]
    assert states[0] == replica_pb2.CYCLE_STATE_QUEUED
    assert states[-1] == replica_pb2.CYCLE_STATE_SUCCEEDED
    assert seen[-1].transferred_bytes == seen[-1].total_bytes == 4096
    assert seen[-1].kind == replica_pb2.CYCLE_KIND_DELTA
    assert seen[-1].sequence == 9
    # Each message differs from the one before: nothing is sent twice.
    assert all(a != b for a, b in itertools.pairwise(seen))


def test_a_watcher_that_left_stops_being_served() -> None:
    book = CycleBook("vm1")
    book.start("initial")
    served = list(book.watch(0, lambda: False))
    assert [c.state for c in served] == [replica_pb2.CYCLE_STATE_RUNNING]
