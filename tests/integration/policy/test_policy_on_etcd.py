"""The policy service against a real etcd: happy path, many parallel writers (then the key
schema's invariants, checked by scanning etcd), a lost or hung etcd, bulk apply, paging, watch."""

from __future__ import annotations

import random
import threading
from collections import Counter

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.common.schema import keys
from services.policy import PolicyConflict, PolicyServer, PolicyStore
from tests.unit.policy.support import (
    PA_1,
    PA_2,
    VSID,
    add_tenant,
    ca_of,
    check_invariants,
    expect_error,
    mac_of,
    record,
    seed,
    watch_until,
)

pytestmark = pytest.mark.etcd
Stub = policy_pb2_grpc.PolicyServiceStub


def test_happy_path(etcd_stub: Stub, etcd_kv: EtcdKV) -> None:
    seeded = seed(etcd_stub)
    created = etcd_stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(
            lookup_record=record("192.0.2.10", "02:00:00:00:00:01", vm="vm1")
        )
    )
    assert created.rdid == seeded.rdid
    moved = etcd_stub.UpdateLookupRecord(
        policy_pb2.UpdateLookupRecordRequest(
            lookup_record=record("192.0.2.10", "02:00:00:00:00:01", pa=PA_2, vm="vm1"),
            expected_revision=created.revision,
        )
    )
    assert moved.pa == PA_2
    expect_error(
        lambda: etcd_stub.CreateLookupRecord(
            policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.11", "02:00:00:00:00:01"))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "lookup_record.mac",
    )
    answer = etcd_stub.SelectNextHop(
        policy_pb2.SelectNextHopRequest(vsid=VSID, source_ca="192.0.2.10", destination_ca="192.0.2.10")
    )
    assert (answer.found, answer.pa) == (True, PA_2)
    assert check_invariants(etcd_kv) == 1


WRITERS = 8
OPS_PER_WRITER = 200
# Few CAs and MACs, so writers collide all the time.
CAS = 24
MACS = 16
EXPECTED_CONFLICTS = {
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ABORTED,
}


def test_parallel_writers_keep_the_invariants(
    policy_on_etcd: PolicyServer, etcd_stub: Stub, etcd_kv: EtcdKV
) -> None:
    seed(etcd_stub)
    outcomes: Counter[str] = Counter()
    unexpected: list[str] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        rng = random.Random(number)
        with grpc.insecure_channel(f"127.0.0.1:{policy_on_etcd.port}") as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            for _ in range(OPS_PER_WRITER):
                ca = f"192.0.2.{rng.randrange(CAS) + 2}"
                rec = record(ca, mac_of(rng.randrange(MACS)), pa=rng.choice((PA_1, PA_2)))
                action = rng.choice(("create", "update", "delete", "bulk"))
                try:
                    if action == "create":
                        stub.CreateLookupRecord(
                            policy_pb2.CreateLookupRecordRequest(lookup_record=rec), timeout=30
                        )
                    elif action == "update":
                        stub.UpdateLookupRecord(
                            policy_pb2.UpdateLookupRecordRequest(lookup_record=rec), timeout=30
                        )
                    elif action == "delete":
                        stub.DeleteLookupRecord(
                            policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca=ca), timeout=30
                        )
                    else:
                        other = record(f"192.0.2.{rng.randrange(CAS) + 2}", mac_of(rng.randrange(MACS)))
                        stub.BulkApplyLookupRecords(
                            iter([policy_pb2.BulkApplyLookupRecordsRequest(upserts=[rec, other])]), timeout=30
                        )
                    result = f"{action}:ok"
                except grpc.RpcError as error:
                    code = error.code()
                    result = f"{action}:{code.name}"
                    if code not in EXPECTED_CONFLICTS:
                        with lock:
                            unexpected.append(f"{result} {error.details()}")
                with lock:
                    outcomes[result] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not unexpected, unexpected[:5]
    assert sum(outcomes.values()) == WRITERS * OPS_PER_WRITER
    for action in ("create", "update", "delete", "bulk"):
        assert outcomes[f"{action}:ok"] > 0, outcomes
    records = check_invariants(etcd_kv)
    assert 0 < records <= min(CAS, MACS)


def test_concurrent_overlapping_subnets_cannot_both_be_created(
    policy_on_etcd: PolicyServer, etcd_stub: Stub
) -> None:
    seeded = seed(etcd_stub, prefix="192.0.2.0/24")
    barrier = threading.Barrier(6)
    codes: list[grpc.StatusCode] = []

    def create(vsid: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{policy_on_etcd.port}") as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            barrier.wait(10)
            try:
                stub.CreateVirtualSubnet(
                    policy_pb2.CreateVirtualSubnetRequest(
                        virtual_subnet=types_pb2.VirtualSubnet(
                            vsid=vsid, rdid=seeded.rdid, ca_prefixes=["198.51.100.0/24"]
                        )
                    ),
                    timeout=30,
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())

    threads = [threading.Thread(target=create, args=(VSID + 1 + n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(codes, key=str) == sorted(
        [grpc.StatusCode.OK] + [grpc.StatusCode.FAILED_PRECONDITION] * 5, key=str
    )


@pytest.mark.parametrize("failure", ["stopped", "hung"])
def test_lost_etcd_is_unavailable(etcd_server: EtcdProcess, etcd_stub: Stub, failure: str) -> None:
    seed(etcd_stub)
    if failure == "stopped":
        etcd_server.stop()
    else:
        etcd_server.pause()
    # The client allows far more than the service's etcd deadline: the service answers by itself.
    for call in (
        lambda: etcd_stub.CreateLookupRecord(
            policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.10", "02:00:00:00:00:01")),
            timeout=60,
        ),
        lambda: etcd_stub.ListLookupRecords(policy_pb2.ListLookupRecordsRequest(), timeout=60),
        lambda: etcd_stub.GetTableStatus(policy_pb2.GetTableStatusRequest(), timeout=60),
    ):
        expect_error(call, grpc.StatusCode.UNAVAILABLE)


def test_bulk_apply_of_thousands_spans_transactions(etcd_stub: Stub, etcd_kv: EtcdKV) -> None:
    seed(etcd_stub)
    # Four tenants reuse the same CA space, each in its own routing domain and VSID.
    vsids = [VSID, VSID + 1, VSID + 2, VSID + 3]
    for vsid in vsids[1:]:
        add_tenant(etcd_stub, vsid, f"t{vsid}")
    records = [
        record(ca_of(i), mac_of(i), pa=(PA_1, PA_2)[i % 2], vsid=vsid) for vsid in vsids for i in range(750)
    ]
    requests = [
        policy_pb2.BulkApplyLookupRecordsRequest(upserts=records[i : i + 500])
        for i in range(0, len(records), 500)
    ]
    result = etcd_stub.BulkApplyLookupRecords(iter(requests))
    assert result.applied == 3000
    assert result.transactions >= 3000 * 2 // etcd_kv.max_txn_ops
    assert result.revision == etcd_kv.current_revision()
    assert check_invariants(etcd_kv) == 3000
    again = etcd_stub.BulkApplyLookupRecords(iter(requests))
    assert (again.applied, again.transactions) == (3000, 0)


def test_paging_on_etcd_is_consistent(etcd_stub: Stub) -> None:
    seed(etcd_stub)
    etcd_stub.BulkApplyLookupRecords(
        iter(
            [
                policy_pb2.BulkApplyLookupRecordsRequest(
                    upserts=[record(ca_of(i), mac_of(i)) for i in range(700)]
                )
            ]
        )
    )
    first = etcd_stub.ListLookupRecords(
        policy_pb2.ListLookupRecordsRequest(page=types_pb2.PageRequest(page_size=300), vsid=VSID)
    )
    etcd_stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca=ca_of(699)))
    found = list(first.lookup_records)
    token = first.next_page_token
    while token:
        page = etcd_stub.ListLookupRecords(
            policy_pb2.ListLookupRecordsRequest(
                page=types_pb2.PageRequest(page_size=300, page_token=token), vsid=VSID
            )
        )
        assert page.revision == first.revision
        found.extend(page.lookup_records)
        token = page.next_page_token
    assert len({r.ca for r in found}) == 700


def test_watch_resumes_from_a_revision(etcd_stub: Stub, etcd_kv: EtcdKV) -> None:
    seed(etcd_stub)
    etcd_stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.10", mac_of(1)))
    )
    resume_at = etcd_kv.current_revision()
    etcd_stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.2", mac_of(2)))
    )
    etcd_stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca="192.0.2.10"))
    end = etcd_kv.current_revision()
    events = watch_until(etcd_stub, policy_pb2.WatchTableRequest(start_revision=resume_at), end)
    assert [(e.type, e.key.rsplit("/", 1)[-1]) for e in events] == [
        (types_pb2.TableEvent.TYPE_PUT, "192.0.2.2"),
        (types_pb2.TableEvent.TYPE_DELETE, "192.0.2.10"),
    ]
    assert events[1].entry.lookup_record.mac == mac_of(1)
    assert all(e.revision > resume_at for e in events)


def test_a_record_written_while_its_pa_is_deleted_keeps_the_pa(
    etcd_stub: Stub, etcd_kv: EtcdKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(etcd_stub)
    store = PolicyStore(etcd_kv)
    scan = PolicyStore._records_using_pa
    raced: list[int] = []

    def scan_then_race(self: PolicyStore, pa_ip: str, revision: int) -> int:
        users = scan(self, pa_ip, revision)
        if not raced:
            # Another writer puts a record on this PA after the delete's scan, before its commit.
            created = etcd_stub.CreateLookupRecord(
                policy_pb2.CreateLookupRecordRequest(lookup_record=record(ca_of(1), mac_of(1), pa=PA_1))
            )
            raced.append(created.revision)
        return users

    monkeypatch.setattr(PolicyStore, "_records_using_pa", scan_then_race)
    with pytest.raises(PolicyConflict, match="still used by 1 lookup records"):
        store.delete_provider_address(PA_1)
    assert raced
    assert etcd_kv.get(keys.pa_key(PA_1)) is not None
    assert check_invariants(etcd_kv) == 1
    # Without users, the delete goes through and takes the reference key with it.
    etcd_stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca=ca_of(1)))
    store.delete_provider_address(PA_1)
    assert etcd_kv.get(keys.pa_key(PA_1)) is None
    assert etcd_kv.get(keys.pa_ref_key(PA_1)) is None
