"""Recovery points at the DR site as undo layers — the pure part: which points to keep, how layers merge.

The replica disk always holds the latest point. Committing delta ``n`` first saves the bytes it is
about to overwrite (the undo layer of point ``n``): applying that layer to point ``n`` gives point
``n-1`` exactly. Going back several points applies their undo layers newest first, so where two layers
cover the same byte the older layer's bytes win. Pruning a point merges its undo layer into the next
kept one with the same rule, so every kept point stays exact and the store holds one copy of each byte
that differs between neighbouring kept points.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from services.replica.states import HOUR_NANOS


@dataclass(frozen=True)
class Piece:
    """Bytes ``[offset, offset + length)`` of a disk come from extent number ``extent`` of ``layer``."""

    offset: int
    length: int
    layer: int
    extent: int


def overlay(layers: Sequence[Sequence[tuple[int, int]]]) -> list[Piece]:
    """Where each byte comes from when ``layers`` are written in order (later layers overwrite earlier).

    Each layer is a list of ``(offset, length)`` extents; extents within one layer may overlap (they
    then hold the same bytes). Returns sorted, disjoint pieces covering the union of all extents.
    """
    covered_starts: list[int] = []
    covered_ends: list[int] = []
    pieces: list[Piece] = []
    for layer in range(len(layers) - 1, -1, -1):
        for extent, (offset, length) in enumerate(layers[layer]):
            for start, end in _uncovered(covered_starts, covered_ends, offset, offset + length):
                pieces.append(Piece(start, end - start, layer, extent))
                _cover(covered_starts, covered_ends, start, end)
    pieces.sort(key=lambda p: p.offset)
    return pieces


def _uncovered(starts: list[int], ends: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    gaps: list[tuple[int, int]] = []
    i = max(0, bisect.bisect_right(starts, lo) - 1)
    position = lo
    while position < hi and i < len(starts):
        if ends[i] <= position:
            i += 1
            continue
        if starts[i] > position:
            gaps.append((position, min(starts[i], hi)))
        position = max(position, ends[i])
        i += 1
    if position < hi:
        gaps.append((position, hi))
    return gaps


def _cover(starts: list[int], ends: list[int], lo: int, hi: int) -> None:
    """Adds [lo, hi) (which overlaps nothing covered) and merges it with touching neighbours."""
    i = bisect.bisect_left(starts, lo)
    starts.insert(i, lo)
    ends.insert(i, hi)
    if i + 1 < len(starts) and starts[i + 1] == ends[i]:
        ends[i] = ends.pop(i + 1)
        starts.pop(i + 1)
    if i > 0 and ends[i - 1] == starts[i]:
        ends[i - 1] = ends.pop(i)
        starts.pop(i)


@dataclass(frozen=True)
class PointInfo:
    """A recovery point as retention sees it."""

    sequence: int
    time_nanos: int


def retained(points: Sequence[PointInfo], now_nanos: int, additional: int) -> tuple[set[int], set[int]]:
    """``(kept, hourly)`` sequence numbers: the latest point plus, for each of the last ``additional``
    clock hours (the current one included), the newest point taken in that hour (Hyper-V's
    "additional hourly recovery points"). Clock hours keep the choice stable as time passes."""
    if not points:
        return set(), set()
    latest = max(points, key=lambda p: p.sequence)
    newest_in_hour: dict[int, PointInfo] = {}
    for point in points:
        hours_ago = now_nanos // HOUR_NANOS - point.time_nanos // HOUR_NANOS
        if point.sequence == latest.sequence or not 0 <= hours_ago < additional:
            continue
        best = newest_in_hour.get(hours_ago)
        if best is None or point.sequence > best.sequence:
            newest_in_hour[hours_ago] = point
    hourly = {p.sequence for p in newest_in_hour.values()}
    return {latest.sequence, *hourly}, hourly
