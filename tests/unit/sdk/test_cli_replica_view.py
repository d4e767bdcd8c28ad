"""How ``overland replica`` shows things: ages, sizes, durations (property-tested), the status table's
width, and JSON with 64-bit integers as numbers."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from overland.cli import replica_view as view
from overland.cli.common import as_dict
from overland.units import UNITS, size
from overland.v1 import replica_pb2

NANOS = 1_000_000_000
UINT64 = st.integers(min_value=0, max_value=2**64 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.integers(min_value=1, max_value=2**62), st.integers(min_value=0, max_value=10**6 * NANOS))
def test_age_reads_as_whole_units_ago(then: int, elapsed: int) -> None:
    text = view.age(then, then + elapsed)
    seconds = elapsed // NANOS
    if seconds == 0:
        assert text == "just now"
        return
    number, unit, ago = text.split()
    assert ago == "ago"
    seconds_per = {"s": 1, "min": 60, "h": 3600, "d": 86400}[unit]
    # The largest unit that fits, rounded down.
    assert int(number) == seconds // seconds_per
    assert int(number) >= 1
    assert unit == "d" or int(number) < {"s": 60, "min": 60, "h": 24}[unit]


def test_age_edges() -> None:
    assert view.age(0, 5) == "never"
    assert view.age(10 * NANOS, 5 * NANOS) == "just now"
    assert view.age(1, 1 + 120 * NANOS) == "2 min ago"


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_size_has_three_digits_at_most_and_the_right_unit(count: int) -> None:
    text = size(count)
    number, unit = text.split()
    power = UNITS.index(unit)
    assert float(number) * 1024**power <= count * 1.006 + 1
    assert float(number) * 1024**power >= count * 0.994 - 1
    assert len(number.replace(".", "").lstrip("0")) <= 4  # e.g. "1.02e+03" never; "1020" at most


@given(st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_duration_is_short_and_in_the_right_unit(seconds: float) -> None:
    text = view.duration(seconds)
    assert len(text) <= 14
    if seconds < 60:
        assert text.endswith(" s")
        assert "min" not in text
    elif seconds < 3600:
        assert " min " in text
    else:
        assert text.startswith(f"{int(seconds) // 3600} h ")


def replication(name: str, reasons: list[str]) -> replica_pb2.Replication:
    return replica_pb2.Replication(
        vm=replica_pb2.VirtualMachine(name=name),
        state=replica_pb2.REPLICATION_STATE_INITIAL_REPLICATION_IN_PROGRESS,
        health=replica_pb2.REPLICATION_HEALTH_CRITICAL,
        health_reasons=reasons,
        statistics=replica_pb2.ReplicationStatistics(
            last_sync_unix_nanos=NANOS,
            last_cycle_unix_nanos=NANOS,
            last_cycle_bytes=3 * 1024**3,
            last_cycle_seconds=754.0,
            rpo_met=False,
        ),
        last_sequence=123456789,
    )


@given(
    st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=63),
    st.lists(st.text(min_size=1, max_size=300), max_size=3),
)
def test_status_fits_100_columns(name: str, reasons: list[str]) -> None:
    console = Console(width=200, record=True, color_system=None)
    rows = [replication(name, reasons)]
    console.print(view.status_table(rows, 10**6 * NANOS), width=view.STATUS_WIDTH)
    for line in view.health_lines(rows):
        console.print(line, markup=False, width=view.STATUS_WIDTH)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= view.STATUS_WIDTH
    # A long name folds the state over two lines; every word is still there.
    assert {"initial", "replication", "progress", "critical"} <= set(re.split(r"\s+", text))
    assert "missed" in text
    assert "3 GiB / 12 min 34 s" in text


@given(UINT64, INT64, UINT64, st.dictionaries(st.text(max_size=5), UINT64, max_size=3))
def test_json_gives_64_bit_integers_as_numbers(
    sequence: int, nanos: int, cycle_bytes: int, sizes: dict[str, int]
) -> None:
    point = replica_pb2.RecoveryPoint(id="x", sequence=sequence, create_time_unix_nanos=nanos)
    data = json.loads(json.dumps(as_dict(point)))
    assert (data["sequence"], data["create_time_unix_nanos"]) == (sequence, nanos)
    nested = replica_pb2.Replication(
        last_sequence=sequence, statistics=replica_pb2.ReplicationStatistics(last_cycle_bytes=cycle_bytes)
    )
    data = json.loads(json.dumps(as_dict(nested)))
    assert data["statistics"]["last_cycle_bytes"] == cycle_bytes
    header = replica_pb2.DeltaHeader(disk_sizes=sizes)
    assert json.loads(json.dumps(as_dict(header)))["disk_sizes"] == sizes
