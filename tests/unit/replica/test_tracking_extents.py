"""Property tests of the pure tracking logic: block sets, record and header codecs, torn-tail replay."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.replica.primary.tracking import BlockSet, LogHeader, TrackingInvalid, block_span
from services.replica.primary.tracking.extents import (
    RECORDS_START,
    decode_header,
    encode_record,
    newest_header,
    replay,
)

BLOCKS = 300
runs = st.lists(
    st.tuples(st.integers(min_value=0, max_value=BLOCKS - 1), st.integers(min_value=0, max_value=40)).map(
        lambda r: (r[0], min(r[1], BLOCKS - r[0]))
    ),
    max_size=20,
)


def expand(run_list: list[tuple[int, int]]) -> set[int]:
    return {b for first, count in run_list for b in range(first, first + count)}


@given(runs)
def test_block_set_matches_a_python_set(run_list: list[tuple[int, int]]) -> None:
    blocks = BlockSet(BLOCKS)
    model: set[int] = set()
    for first, count in run_list:
        added = blocks.add_run(first, count)
        new = set(range(first, first + count)) - model
        assert expand(added) == new
        model |= new
    assert len(blocks) == len(model)
    assert expand(blocks.runs()) == model
    assert all(b in blocks for b in model)
    result = blocks.runs()
    # Runs are sorted, maximal and disjoint.
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(result))


def test_block_set_refuses_blocks_outside_the_disk() -> None:
    with pytest.raises(TrackingInvalid):
        BlockSet(10).add_run(8, 3)


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**26))
def test_block_span_covers_exactly_the_touched_blocks(offset: int, length: int) -> None:
    size = 4096
    first, count = block_span(offset, length, size)
    if length == 0:
        assert count == 0
        return
    assert first * size <= offset < (first + 1) * size
    assert (first + count - 1) * size <= offset + length - 1 < (first + count) * size


@given(st.lists(runs, max_size=8), st.data())
def test_replay_stops_at_a_torn_tail(records: list[list[tuple[int, int]]], data: st.DataObject) -> None:
    encoded = [encode_record(seq, r) for seq, r in enumerate(records)]
    log = bytes(RECORDS_START) + b"".join(encoded)
    full = replay(log, blocks=BLOCKS)
    assert not full.torn
    assert full.runs == [run for r in records for run in r]
    assert full.next_sequence == len(records)
    cut_at = data.draw(st.integers(min_value=RECORDS_START, max_value=len(log)))
    torn = replay(log[:cut_at], blocks=BLOCKS)
    whole = 0
    position = RECORDS_START
    for record in encoded:
        if position + len(record) > cut_at:
            break
        position += len(record)
        whole += 1
    assert torn.runs == [run for r in records[:whole] for run in r]
    assert torn.valid_end == position


@given(st.lists(runs, min_size=1, max_size=5), st.data())
def test_replay_rejects_a_corrupted_record_and_everything_after(
    records: list[list[tuple[int, int]]], data: st.DataObject
) -> None:
    encoded = [encode_record(seq, r) for seq, r in enumerate(records)]
    victim = data.draw(st.integers(min_value=0, max_value=len(records) - 1))
    start = RECORDS_START + sum(len(e) for e in encoded[:victim])
    index = start + data.draw(st.integers(min_value=0, max_value=len(encoded[victim]) - 1))
    log = bytearray(bytes(RECORDS_START) + b"".join(encoded))
    log[index] ^= 0x10
    result = replay(bytes(log), blocks=BLOCKS)
    assert result.torn
    assert result.runs == [run for r in records[:victim] for run in r]


def test_replay_rejects_out_of_order_sequences_and_runs_past_the_disk() -> None:
    log = bytes(RECORDS_START) + encode_record(5, [(1, 1)]) + encode_record(7, [(2, 1)])
    assert replay(log).runs == [(1, 1)]
    assert replay(bytes(RECORDS_START) + encode_record(0, [(BLOCKS, 1)]), blocks=BLOCKS).runs == []


@given(
    st.builds(
        LogHeader,
        sequence=st.integers(min_value=0, max_value=2**64 - 1),
        generation=st.integers(min_value=0, max_value=2**64 - 1),
        block_size=st.integers(min_value=9, max_value=26).map(lambda e: 1 << e),
        disk_size=st.integers(min_value=1, max_value=2**64 - 1),
        clean=st.booleans(),
        resync_required=st.booleans(),
    )
)
def test_header_round_trips_and_the_newest_valid_slot_wins(header: LogHeader) -> None:
    slot = header.encode()
    assert len(slot) == 512
    assert decode_header(slot) == header
    torn = bytearray(slot)
    torn[20] ^= 1
    assert decode_header(bytes(torn)) is None
    older = LogHeader(0, 1, 4096, 1, clean=True, resync_required=False)
    if header.sequence > 0:
        assert newest_header([older.encode(), slot]) == header
    assert newest_header([older.encode(), bytes(torn)]) == older
    assert newest_header([bytes(512), bytes(torn)]) is None
