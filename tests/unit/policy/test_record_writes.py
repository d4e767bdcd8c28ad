"""Single lookup record writes: one checked transaction each, and a lost race decided again.

A writer racing the store is simulated by a MemoryKV that runs another store's write just before
the next write transaction of the store under test (its reads are already done by then)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from overland.v1 import types_pb2
from services.common.kv import Compare, Get, Op, TxnResult
from services.common.memory_kv import MemoryKV
from services.policy import PolicyStore, ResourceExists, StaleRevision
from tests.unit.policy.support import check_invariants

RDID = "6f1c1d1e-0000-4000-8000-000000000001"
VSID = 5000
PAS = ("198.18.0.1", "198.18.0.2")


class RacingKV(MemoryKV):
    """Runs ``race`` (once per entry) before each write transaction, and counts transactions."""

    def __init__(self) -> None:
        super().__init__(progress_interval=None)
        self.races: list[Callable[[], object]] = []
        self._racing = False
        self.reads = 0
        self.writes = 0

    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        if any(not isinstance(op, Get) for op in success):
            self.writes += 1
            if self.races and not self._racing:
                # The racing write's own transactions do not start another race.
                self._racing = True
                try:
                    self.races.pop(0)()
                finally:
                    self._racing = False
        else:
            self.reads += 1
        return super().txn(compares, success, failure)


def _record(
    ca: str = "192.0.2.10", mac: str = "02:00:00:00:00:10", pa: str = PAS[0]
) -> types_pb2.LookupRecord:
    return types_pb2.LookupRecord(vsid=VSID, ca=ca, mac=mac, pa=pa)


@pytest.fixture
def kv() -> RacingKV:
    kv = RacingKV()
    seed = PolicyStore(kv)
    seed.create_routing_domain(types_pb2.RoutingDomain(rdid=RDID, tenant_name="blue"))
    seed.create_virtual_subnet(types_pb2.VirtualSubnet(vsid=VSID, rdid=RDID, ca_prefixes=["192.0.2.0/24"]))
    for pa in PAS:
        seed.create_provider_address(
            types_pb2.ProviderAddress(pa_ip=pa, host_name=f"host-{pa}", prefix_length=24)
        )
    kv.reads = kv.writes = 0
    return kv


def test_an_uncontended_write_is_two_reads_and_one_transaction(kv: RacingKV) -> None:
    store = PolicyStore(kv)
    created = store.create_lookup_record(_record())
    # The VSID index and the PA, then the subnet the index names (its CA prefixes and gateway).
    assert (kv.reads, kv.writes) == (2, 1)
    assert created.revision == kv.current_revision()
    assert created.rdid == RDID


def test_a_create_that_loses_to_the_same_create_is_already_exists(kv: RacingKV) -> None:
    store, other = PolicyStore(kv), PolicyStore(kv)
    kv.races.append(lambda: other.create_lookup_record(_record(mac="02:00:00:00:00:99")))
    with pytest.raises(ResourceExists, match=r"192\.0\.2\.10"):
        store.create_lookup_record(_record())
    # Two reads and one write each: our failed transaction read the compared keys back, so the
    # decision needed no read after it.
    assert (kv.reads, kv.writes) == (4, 2)
    assert store.get_lookup_record(VSID, "192.0.2.10").mac == "02:00:00:00:00:99"
    assert check_invariants(kv) == 1


def test_an_update_that_loses_a_race_decides_again_on_what_won(kv: RacingKV) -> None:
    store, other = PolicyStore(kv), PolicyStore(kv)
    store.create_lookup_record(_record())
    kv.races.append(lambda: other.update_lookup_record(_record(mac="02:00:00:00:00:20")))
    updated = store.update_lookup_record(_record(pa=PAS[1], mac="02:00:00:00:00:30"))
    assert (updated.pa, updated.mac, updated.revision) == (PAS[1], "02:00:00:00:00:30", kv.current_revision())
    assert store.get_lookup_record(VSID, "192.0.2.10") == updated
    # The MAC index follows the winner's MAC, then ours: only ours is left.
    assert check_invariants(kv) == 1


def test_a_delete_that_loses_to_a_delete_is_not_found(kv: RacingKV) -> None:
    store, other = PolicyStore(kv), PolicyStore(kv)
    store.create_lookup_record(_record())
    kv.races.append(lambda: other.delete_lookup_record(VSID, "192.0.2.10"))
    with pytest.raises(Exception, match="does not exist") as caught:
        store.delete_lookup_record(VSID, "192.0.2.10")
    assert type(caught.value).__name__ == "ResourceNotFound"
    assert check_invariants(kv) == 0


def test_a_writer_that_loses_every_race_gives_up_aborted(kv: RacingKV) -> None:
    store, other = PolicyStore(kv, max_attempts=3), PolicyStore(kv)
    store.create_lookup_record(_record())
    macs = iter(f"02:00:00:00:01:{n:02x}" for n in range(10))
    kv.races += [lambda: other.update_lookup_record(_record(mac=next(macs))) for _ in range(3)]
    with pytest.raises(StaleRevision, match="lost 3 races"):
        store.update_lookup_record(_record(pa=PAS[1]))
    # Three attempts of ours, each after the racing write.
    assert kv.writes == 1 + 3 * 2
    assert check_invariants(kv) == 1


def test_an_unchanged_record_is_not_written(kv: RacingKV) -> None:
    store = PolicyStore(kv)
    created = store.create_lookup_record(_record())
    writes = kv.writes
    assert store.update_lookup_record(_record()) == created
    assert kv.writes == writes
