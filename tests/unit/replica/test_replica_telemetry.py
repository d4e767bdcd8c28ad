"""The replica's RPO and sync-age figures (property-tested) and the per-VM gauge rows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.settings import DEFAULT_FREQUENCY
from services.replica.telemetry import (
    HEALTH,
    LAST_SYNC_AGE,
    PENDING_BYTES,
    RPO_VIOLATED,
    last_sync_age,
    missed_rpo,
    replication_rows,
    rpo_violated,
)

SECOND = 1_000_000_000


@given(st.booleans(), st.floats(0, 10_000), st.sampled_from([30, 300, 900]))
def test_a_cycle_misses_the_rpo_when_it_fails_or_overruns(ok: bool, seconds: float, frequency: int) -> None:
    assert missed_rpo(ok, seconds, frequency) == (not ok or seconds > frequency)


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.sampled_from([30, 300, 900]))
def test_no_age_before_the_first_sync_and_never_negative(last: int, now: int, frequency: int) -> None:
    age = last_sync_age(last, now)
    violated = rpo_violated(last, now, frequency)
    if last == 0:
        assert age is None
        assert violated is None
    else:
        assert age is not None
        assert age >= 0
        assert violated == (age > 2 * frequency)


def test_rows_per_vm_use_the_default_frequency_when_unset() -> None:
    synced = replica_pb2.Replication(
        vm=replica_pb2.VirtualMachine(name="vm1"),
        statistics=replica_pb2.ReplicationStatistics(last_sync_unix_nanos=10 * SECOND, pending_bytes=4096),
    )
    never = replica_pb2.Replication(vm=replica_pb2.VirtualMachine(name="vm2"))
    now = (10 + 2 * DEFAULT_FREQUENCY + 1) * SECOND
    rows = replication_rows([synced, never], now)
    vm1 = {"overland.vm": "vm1"}
    assert (PENDING_BYTES, 4096, vm1) in rows
    assert (LAST_SYNC_AGE, 2 * DEFAULT_FREQUENCY + 1, vm1) in rows
    assert (RPO_VIOLATED, 1, vm1) in rows
    assert [r for r in rows if r[2] == {"overland.vm": "vm2"}] == [(PENDING_BYTES, 0, {"overland.vm": "vm2"})]


def test_the_health_gauge_counts_up_with_severity_and_is_absent_while_unknown() -> None:
    def health_rows(health: int) -> list[tuple[str, float, dict[str, str]]]:
        replication = replica_pb2.Replication(vm=replica_pb2.VirtualMachine(name="vm1"), health=health)  # type: ignore[arg-type]
        return [row for row in replication_rows([replication], 0) if row[0] == HEALTH]

    vm1 = {"overland.vm": "vm1"}
    assert health_rows(replica_pb2.REPLICATION_HEALTH_NORMAL) == [(HEALTH, 0, vm1)]
    assert health_rows(replica_pb2.REPLICATION_HEALTH_WARNING) == [(HEALTH, 1, vm1)]
    assert health_rows(replica_pb2.REPLICATION_HEALTH_CRITICAL) == [(HEALTH, 2, vm1)]
    assert health_rows(replica_pb2.REPLICATION_HEALTH_UNSPECIFIED) == []
