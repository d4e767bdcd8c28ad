"""Recovery-point undo layers (overlay) and retention, checked against a byte-array model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.replica.dr.recovery import PointInfo, overlay, retained
from services.replica.states import HOUR_NANOS

SIZE = 200
extents = st.lists(st.tuples(st.integers(0, SIZE - 1), st.integers(1, 40)), max_size=8).map(
    lambda xs: [(o, min(n, SIZE - o)) for o, n in xs]
)


@given(st.lists(extents, min_size=1, max_size=5))
@settings(max_examples=300)
def test_overlay_equals_writing_layers_in_order(layers: list[list[tuple[int, int]]]) -> None:
    # Model: each layer writes its own tag; later layers overwrite earlier ones.
    model = [-1] * SIZE
    for tag, layer in enumerate(layers):
        for offset, length in layer:
            for i in range(offset, offset + length):
                model[i] = tag
    got = [-1] * SIZE
    previous_end = 0
    for piece in overlay(layers):
        assert piece.offset >= previous_end
        assert piece.length > 0
        previous_end = piece.offset + piece.length
        source_offset, source_length = layers[piece.layer][piece.extent]
        assert source_offset <= piece.offset
        assert piece.offset + piece.length <= source_offset + source_length
        for i in range(piece.offset, piece.offset + piece.length):
            got[i] = piece.layer
    assert got == model


@given(
    st.lists(st.integers(0, 30 * HOUR_NANOS), min_size=1, max_size=40, unique=True),
    st.integers(0, 24),
)
def test_retention(times: list[int], additional: int) -> None:
    now = 30 * HOUR_NANOS
    points = [PointInfo(sequence=i + 1, time_nanos=t) for i, t in enumerate(sorted(times))]
    kept, hourly = retained(points, now, additional)
    latest = points[-1].sequence
    assert latest in kept
    assert latest not in hourly
    assert len(kept) <= additional + 1
    assert kept == hourly | {latest}
    for seq in hourly:
        point = points[seq - 1]
        hour = point.time_nanos // HOUR_NANOS
        assert now // HOUR_NANOS - hour < additional
        # Newest of its hour (apart from the latest point).
        assert all(
            p.sequence <= seq or p.sequence == latest for p in points if p.time_nanos // HOUR_NANOS == hour
        )
