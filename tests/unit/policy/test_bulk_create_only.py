"""Bulk loads with create_only refuse and name existing records; plain upserts count what they
replaced. Through a real server (port 0) over MemoryKV."""

from __future__ import annotations

import grpc

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.memory_kv import MemoryKV
from services.policy import PolicyStore
from services.policy.record_planner import Mode, RecordChange
from services.policy.validation import validate_lookup_record

from .support import PA_1, PA_2, ca_of, check_invariants, expect_error, mac_of, record, seed, violations_of

Stub = policy_pb2_grpc.PolicyServiceStub


def _load(
    stub: Stub, records: list[types_pb2.LookupRecord], *, create_only: bool = False, chunk: int = 100
) -> policy_pb2.BulkApplyLookupRecordsResponse:
    return stub.BulkApplyLookupRecords(
        iter(
            [
                policy_pb2.BulkApplyLookupRecordsRequest(
                    upserts=records[i : i + chunk], create_only=create_only
                )
                for i in range(0, len(records), chunk)
            ]
        )
    )


def test_create_only_loads_fresh_records_and_refuses_existing_ones_by_name(
    stub: Stub, memory_kv: object
) -> None:
    seed(stub)
    first = _load(stub, [record(ca_of(i), mac_of(i)) for i in range(300)], create_only=True)
    assert (first.applied, first.replaced) == (300, 0)
    # 100 new records, then 70 that exist (some changed, some not): nothing past the first existing.
    again = [record(ca_of(i), mac_of(i)) for i in range(300, 400)]
    again += [
        record(ca_of(i), mac_of(i), pa=PA_2 if i % 2 else record(ca_of(i), mac_of(i)).pa) for i in range(70)
    ]
    error, _ = expect_error(lambda: _load(stub, again, create_only=True), grpc.StatusCode.ALREADY_EXISTS)
    violations = violations_of(error)
    details = error.details() or ""
    assert "100 records applied" in details
    assert "70 of the next 70 records exist already" in details
    assert 20 <= len(violations) <= 50
    assert f"the first {len(violations)} are named" in details
    assert all(field.endswith(".ca") and "already has" in text for field, text in violations.items())
    assert f"already has {ca_of(0)}" in next(iter(violations.values()))
    assert check_invariants(memory_kv) == 400  # type: ignore[arg-type]


def test_upserts_report_how_many_live_records_they_replaced(stub: Stub) -> None:
    seed(stub)
    _load(stub, [record(ca_of(i), mac_of(i)) for i in range(200)])
    # 200 again: 50 moved to another PA, 10 with a new MAC, the rest unchanged (no-ops), 20 new.
    changed = [
        record(
            ca_of(i),
            mac_of(i + 1000) if 50 <= i < 60 else mac_of(i),
            pa=PA_2 if i < 50 else record(ca_of(i), mac_of(i)).pa,
        )
        for i in range(200)
    ]
    changed += [record(ca_of(i), mac_of(i)) for i in range(200, 220)]
    result = _load(stub, changed)
    assert (result.applied, result.replaced) == (220, 60)
    assert _load(stub, changed).replaced == 0


def test_a_fresh_load_over_many_vsids_fills_its_transactions() -> None:
    """The subnets a load's records name are read ahead with their VSIDs: no transaction is cut short
    when the next record is of a VSID not seen yet (156 records in 10 VSIDs take 3 transactions, not
    one or more per VSID)."""
    store = PolicyStore(MemoryKV(progress_interval=None))
    rdid = store.create_routing_domain(types_pb2.RoutingDomain(tenant_name="t")).rdid
    store.create_provider_address(types_pb2.ProviderAddress(pa_ip=PA_1, host_name="h", prefix_length=16))
    vsids = range(5001, 5011)
    for number, vsid in enumerate(vsids):
        prefix = f"192.0.2.{number * 16}/28" if number < 8 else f"198.51.100.{(number - 8) * 128}/25"
        store.create_virtual_subnet(types_pb2.VirtualSubnet(vsid=vsid, rdid=rdid, ca_prefixes=[prefix]))
    changes = []
    for number, vsid in enumerate(vsids):
        base = store.get_virtual_subnet(vsid).ca_prefixes[0].split("/")[0]
        first = int(base.rsplit(".", 1)[1])
        for i in range(30 if number >= 8 else 12):
            ca = f"{base.rsplit('.', 1)[0]}.{first + 2 + i}"
            rec = types_pb2.LookupRecord(ca=ca, vsid=vsid, mac=mac_of(number * 100 + i), pa=PA_1)
            changes.append(RecordChange(Mode.UPSERT, validate_lookup_record(rec)))
    run = store.bulk_apply()
    run.feed(changes)
    result = run.finish()
    assert result.applied == len(changes) == 8 * 12 + 2 * 30
    # 2 shared compares per VSID and 1 for the PA, 2 compares and 2 puts per record, 127 of each.
    assert result.transactions <= 3
