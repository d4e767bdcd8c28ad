"""Values written into a real etcd around the policy service: they do not break the listing or
reading of the rest of their VSID, are named in list responses, and ``CheckTable`` finds and
quarantines them where no agent or listing looks."""

from __future__ import annotations

import logging

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.etcd_kv import EtcdKV
from services.common.kv import Put
from services.common.schema import encode_entry, keys
from services.policy import PolicyServer
from services.policy.unreadable import QUARANTINE_PREFIX
from tests.unit.policy.support import PA_1, VSID, ca_of, mac_of, record, seed

Stub = policy_pb2_grpc.PolicyServiceStub


def test_unreadable_values_are_skipped_named_and_quarantined(
    etcd_stub: Stub, etcd_kv: EtcdKV, policy_on_etcd: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    stub = etcd_stub
    seeded = seed(stub)
    stub.BulkApplyLookupRecords(
        iter(
            [
                policy_pb2.BulkApplyLookupRecordsRequest(
                    upserts=[record(ca_of(i), mac_of(i)) for i in range(5)]
                )
            ]
        )
    )
    garbage = keys.record_key(seeded.rdid, VSID, "192.0.2.200")
    wrong_kind = keys.record_key(seeded.rdid, VSID, ca_of(2))
    host = keys.host_key("hand-written")
    etcd_kv.txn(
        [],
        [
            Put(garbage, b"\xff\x00 not a StoreEntry"),
            Put(
                wrong_kind,
                encode_entry(types_pb2.ProviderAddress(pa_ip=PA_1, host_name="x", prefix_length=16), 1),
            ),
            Put(host, b"\x0a\xff"),
        ],
    )
    caplog.set_level(logging.WARNING, logger="services.policy.unreadable")

    # Listing, page by page: the readable records, and each unreadable key named once.
    listed: list[str] = []
    named: list[str] = []
    token = ""
    while True:
        page = stub.ListLookupRecords(
            policy_pb2.ListLookupRecordsRequest(
                vsid=VSID, page=types_pb2.PageRequest(page_size=2, page_token=token)
            )
        )
        listed += [r.ca for r in page.lookup_records]
        named += [u.key for u in page.unreadable]
        token = page.next_page_token
        if not token:
            break
    assert sorted(listed) == sorted(ca_of(i) for i in (0, 1, 3, 4))
    assert sorted(named) == sorted([garbage.decode(), wrong_kind.decode()])
    assert policy_on_etcd.store.unreadable.reported >= 2
    assert any("unreadable stored value" in r.getMessage() for r in caplog.records)
    # Reading the rest of the VSID works; reading the unreadable one is DATA_LOSS, not INTERNAL.
    assert stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca=ca_of(3))).ca == ca_of(3)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca=ca_of(2)))
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    # The status of the table skips the unreadable host.
    assert stub.GetTableStatus(policy_pb2.GetTableStatusRequest()).revision > 0

    found = stub.CheckTable(policy_pb2.CheckTableRequest())
    assert found.found == 3
    assert sorted(u.key for u in found.unreadable) == sorted(k.decode() for k in (garbage, wrong_kind, host))
    assert found.quarantined == 0
    assert etcd_kv.get(garbage) is not None

    moved = stub.CheckTable(policy_pb2.CheckTableRequest(quarantine=True))
    assert (moved.found, moved.quarantined) == (3, 3)
    for key in (garbage, wrong_kind, host):
        assert etcd_kv.get(key) is None
        kept = etcd_kv.get(QUARANTINE_PREFIX + key.removeprefix(b"/overland/"))
        assert kept is not None
        assert kept.value
    assert stub.CheckTable(policy_pb2.CheckTableRequest()).found == 0
    page = stub.ListLookupRecords(policy_pb2.ListLookupRecordsRequest(vsid=VSID))
    assert (len(page.lookup_records), len(page.unreadable)) == (4, 0)
