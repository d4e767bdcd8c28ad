"""Every bad-input case of issue 2 through a real gRPC server (port 0) over MemoryKV: the status
code and the BadRequest field violations."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.memory_kv import MemoryKV
from services.policy import PolicyServer

from .support import PA_1, VSID, check_invariants, expect_error, record, seed

Stub = policy_pb2_grpc.PolicyServiceStub
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def create_record(stub: Stub, rec: types_pb2.LookupRecord) -> types_pb2.LookupRecord:
    return stub.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=rec))


def create_subnet(stub: Stub, vsid: int, rdid: str, *prefixes: str) -> types_pb2.VirtualSubnet:
    return stub.CreateVirtualSubnet(
        policy_pb2.CreateVirtualSubnetRequest(
            virtual_subnet=types_pb2.VirtualSubnet(vsid=vsid, rdid=rdid, ca_prefixes=list(prefixes))
        )
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ca": "192.0.2.300"}, "lookup_record.ca"),
        ({"ca": "2001:db8::1"}, "lookup_record.ca"),
        ({"ca": ""}, "lookup_record.ca"),
        ({"mac": "aa:bb:cc:dd:ee"}, "lookup_record.mac"),
        ({"mac": "zz:bb:cc:dd:ee:ff"}, "lookup_record.mac"),
        ({"mac": "01:00:5e:00:00:01"}, "lookup_record.mac"),
        ({"mac": "00:00:00:00:00:00"}, "lookup_record.mac"),
        ({"pa": "198.18.0.256"}, "lookup_record.pa"),
        ({"pa": "224.0.0.1"}, "lookup_record.pa"),
        ({"vsid": 0}, "lookup_record.vsid"),
        ({"vsid": 4095}, "lookup_record.vsid"),
        ({"vsid": 0xFFFFFF}, "lookup_record.vsid"),
        ({"vsid": 0x1000000}, "lookup_record.vsid"),
        ({"rule": 7}, "lookup_record.rule"),
        ({"type": 9}, "lookup_record.type"),
    ],
)
def test_bad_lookup_record_is_invalid_argument(stub: Stub, changes: dict[str, object], field: str) -> None:
    seed(stub)
    rec = record("192.0.2.10", "02:00:00:00:00:01")
    for name, value in changes.items():
        setattr(rec, name, value)
    _error, violations = expect_error(lambda: create_record(stub, rec), INVALID, field)
    assert violations[field]


def test_every_bad_field_is_reported_at_once(stub: Stub) -> None:
    bad = types_pb2.LookupRecord(ca="nope", vsid=1, mac="nope", pa="nope")
    _error, violations = expect_error(
        lambda: create_record(stub, bad),
        INVALID,
        "lookup_record.ca",
        "lookup_record.vsid",
        "lookup_record.mac",
        "lookup_record.pa",
    )
    assert "reserved" in violations["lookup_record.vsid"]


@pytest.mark.parametrize(
    ("prefixes", "field"),
    [
        (["192.0.2.0"], "virtual_subnet.ca_prefixes[0]"),
        (["192.0.2.1/24"], "virtual_subnet.ca_prefixes[0]"),
        (["192.0.2.0/33"], "virtual_subnet.ca_prefixes[0]"),
        (["192.0.2.0/24", "192.0.2.128/25"], "virtual_subnet.ca_prefixes[1]"),
        ([], "virtual_subnet.ca_prefixes"),
    ],
)
def test_bad_prefix_is_invalid_argument(stub: Stub, prefixes: list[str], field: str) -> None:
    seeded = seed(stub)
    expect_error(lambda: create_subnet(stub, VSID + 1, seeded.rdid, *prefixes), INVALID, field)


@pytest.mark.parametrize("vsid", [0, 1, 0xFFF, 0xFFFFFF, 0x1000000])
def test_reserved_or_out_of_range_vsid_is_invalid_argument(stub: Stub, vsid: int) -> None:
    seeded = seed(stub)
    _error, violations = expect_error(
        lambda: create_subnet(stub, vsid, seeded.rdid, "198.51.100.0/24"), INVALID, "virtual_subnet.vsid"
    )
    assert "4096..16777214" in violations["virtual_subnet.vsid"]


def test_vsid_edges_are_valid(stub: Stub) -> None:
    seeded = seed(stub, prefix="192.0.2.0/24")
    assert create_subnet(stub, 4096, seeded.rdid, "198.51.100.0/25").vsid == 4096
    assert create_subnet(stub, 0xFFFFFE, seeded.rdid, "198.51.100.128/25").vsid == 0xFFFFFE


def test_bad_provider_address_fields(stub: Stub) -> None:
    bad = types_pb2.ProviderAddress(host_name="", pa_ip="198.18.0.1", prefix_length=33, vlan_id=4095)
    expect_error(
        lambda: stub.CreateProviderAddress(policy_pb2.CreateProviderAddressRequest(provider_address=bad)),
        INVALID,
        "provider_address.host_name",
        "provider_address.prefix_length",
        "provider_address.vlan_id",
    )


def test_unknown_pa_is_failed_precondition(stub: Stub) -> None:
    seed(stub)
    _error, violations = expect_error(
        lambda: create_record(stub, record("192.0.2.10", "02:00:00:00:00:01", pa="198.18.0.99")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "lookup_record.pa",
    )
    assert "not a registered provider address" in violations["lookup_record.pa"]


def test_unknown_vsid_is_failed_precondition(stub: Stub) -> None:
    seed(stub)
    expect_error(
        lambda: create_record(stub, record("192.0.2.10", "02:00:00:00:00:01", vsid=VSID + 7)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "lookup_record.vsid",
    )


def test_duplicate_ca_is_already_exists(stub: Stub) -> None:
    seed(stub)
    create_record(stub, record("192.0.2.10", "02:00:00:00:00:01"))
    expect_error(
        lambda: create_record(stub, record("192.0.2.10", "02:00:00:00:00:02")),
        grpc.StatusCode.ALREADY_EXISTS,
        "lookup_record.ca",
    )


def test_duplicate_mac_is_already_exists_in_any_case(stub: Stub) -> None:
    seed(stub)
    create_record(stub, record("192.0.2.10", "02:00:00:00:00:aa"))
    _error, violations = expect_error(
        lambda: create_record(stub, record("192.0.2.11", "02-00-00-00-00-AA")),
        grpc.StatusCode.ALREADY_EXISTS,
        "lookup_record.mac",
    )
    assert "192.0.2.10" in violations["lookup_record.mac"]


def test_same_ca_and_mac_in_another_routing_domain_is_fine(stub: Stub) -> None:
    seed(stub)
    other = stub.CreateRoutingDomain(
        policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name="Fabrikam"))
    )
    create_subnet(stub, VSID + 1, other.rdid, "192.0.2.0/24")
    create_record(stub, record("192.0.2.10", "02:00:00:00:00:01"))
    again = create_record(stub, record("192.0.2.10", "02:00:00:00:00:01", vsid=VSID + 1))
    assert again.rdid == other.rdid


def test_overlapping_subnets_are_failed_precondition(stub: Stub) -> None:
    seeded = seed(stub)
    _error, violations = expect_error(
        lambda: create_subnet(stub, VSID + 1, seeded.rdid, "198.51.100.0/24", "192.0.2.128/25"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "virtual_subnet.ca_prefixes[1]",
    )
    assert str(VSID) in violations["virtual_subnet.ca_prefixes[1]"]


def test_duplicate_vsid_is_already_exists(stub: Stub) -> None:
    seeded = seed(stub)
    expect_error(
        lambda: create_subnet(stub, VSID, seeded.rdid, "198.51.100.0/24"),
        grpc.StatusCode.ALREADY_EXISTS,
        "virtual_subnet.vsid",
    )


def test_subnet_of_unknown_domain_is_failed_precondition(stub: Stub) -> None:
    expect_error(
        lambda: create_subnet(stub, VSID, "6f1c1d1e-0000-4000-8000-000000000001", "192.0.2.0/24"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "virtual_subnet.rdid",
    )


def test_bad_rdid_is_invalid_argument(stub: Stub) -> None:
    expect_error(
        lambda: stub.GetRoutingDomain(policy_pb2.GetRoutingDomainRequest(rdid="not-a-uuid")), INVALID, "rdid"
    )


def test_stale_revision_is_aborted(stub: Stub) -> None:
    seed(stub)
    created = create_record(stub, record("192.0.2.10", "02:00:00:00:00:01"))
    updated = stub.UpdateLookupRecord(
        policy_pb2.UpdateLookupRecordRequest(
            lookup_record=record("192.0.2.10", "02:00:00:00:00:01", pa="198.18.0.2"),
            expected_revision=created.revision,
        )
    )
    assert updated.revision > created.revision
    expect_error(
        lambda: stub.UpdateLookupRecord(
            policy_pb2.UpdateLookupRecordRequest(
                lookup_record=record("192.0.2.10", "02:00:00:00:00:01"), expected_revision=created.revision
            )
        ),
        grpc.StatusCode.ABORTED,
        "expected_revision",
    )
    expect_error(
        lambda: stub.DeleteLookupRecord(
            policy_pb2.DeleteLookupRecordRequest(
                vsid=VSID, ca="192.0.2.10", expected_revision=created.revision
            )
        ),
        grpc.StatusCode.ABORTED,
    )


def test_stale_revision_on_domain_subnet_and_pa_is_aborted(stub: Stub) -> None:
    seeded = seed(stub)
    domain = stub.GetRoutingDomain(policy_pb2.GetRoutingDomainRequest(rdid=seeded.rdid))
    expect_error(
        lambda: stub.UpdateRoutingDomain(
            policy_pb2.UpdateRoutingDomainRequest(
                routing_domain=types_pb2.RoutingDomain(rdid=seeded.rdid, tenant_name="X"),
                expected_revision=domain.revision - 1,
            )
        ),
        grpc.StatusCode.ABORTED,
    )
    expect_error(
        lambda: stub.DeleteVirtualSubnet(
            policy_pb2.DeleteVirtualSubnetRequest(vsid=VSID, expected_revision=1)
        ),
        grpc.StatusCode.ABORTED,
    )
    expect_error(
        lambda: stub.DeleteProviderAddress(
            policy_pb2.DeleteProviderAddressRequest(pa_ip=PA_1, expected_revision=1)
        ),
        grpc.StatusCode.ABORTED,
    )


def test_deleting_what_others_depend_on_is_failed_precondition(stub: Stub) -> None:
    seeded = seed(stub)
    create_record(stub, record("192.0.2.10", "02:00:00:00:00:01"))
    precondition = grpc.StatusCode.FAILED_PRECONDITION
    expect_error(
        lambda: stub.DeleteProviderAddress(policy_pb2.DeleteProviderAddressRequest(pa_ip=PA_1)),
        precondition,
        "pa_ip",
    )
    expect_error(
        lambda: stub.DeleteVirtualSubnet(policy_pb2.DeleteVirtualSubnetRequest(vsid=VSID)),
        precondition,
        "vsid",
    )
    expect_error(
        lambda: stub.DeleteRoutingDomain(policy_pb2.DeleteRoutingDomainRequest(rdid=seeded.rdid)),
        precondition,
        "rdid",
    )
    stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca="192.0.2.10"))
    stub.DeleteProviderAddress(policy_pb2.DeleteProviderAddressRequest(pa_ip=PA_1))
    stub.DeleteVirtualSubnet(policy_pb2.DeleteVirtualSubnetRequest(vsid=VSID))
    stub.DeleteRoutingDomain(policy_pb2.DeleteRoutingDomainRequest(rdid=seeded.rdid))
    expect_error(
        lambda: stub.GetRoutingDomain(policy_pb2.GetRoutingDomainRequest(rdid=seeded.rdid)),
        grpc.StatusCode.NOT_FOUND,
    )


def test_missing_resources_are_not_found(stub: Stub) -> None:
    seed(stub)
    not_found = grpc.StatusCode.NOT_FOUND
    expect_error(
        lambda: stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID + 3, ca="192.0.2.1")),
        not_found,
    )
    expect_error(
        lambda: stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca="192.0.2.1")),
        not_found,
    )
    expect_error(
        lambda: stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca="192.0.2.99")), not_found
    )
    expect_error(lambda: stub.GetVirtualSubnet(policy_pb2.GetVirtualSubnetRequest(vsid=VSID + 1)), not_found)
    expect_error(
        lambda: stub.GetProviderAddress(policy_pb2.GetProviderAddressRequest(pa_ip="198.18.9.9")), not_found
    )
    expect_error(
        lambda: stub.UpdateLookupRecord(
            policy_pb2.UpdateLookupRecordRequest(lookup_record=record("192.0.2.99", "02:00:00:00:00:09"))
        ),
        not_found,
    )


def test_bad_page_token_and_size_are_invalid_argument(stub: Stub) -> None:
    seed(stub)
    expect_error(
        lambda: stub.ListLookupRecords(
            policy_pb2.ListLookupRecordsRequest(page=types_pb2.PageRequest(page_token="garbage!"))
        ),
        INVALID,
        "page.page_token",
    )
    expect_error(
        lambda: stub.ListProviderAddresses(
            policy_pb2.ListProviderAddressesRequest(page=types_pb2.PageRequest(page_size=1001))
        ),
        INVALID,
        "page.page_size",
    )


def test_bulk_apply_validates_each_message_before_writing_any_of_it(stub: Stub, memory_kv: MemoryKV) -> None:
    seed(stub)
    before = memory_kv.current_revision()
    good = [record(f"192.0.2.{i}", f"02:00:00:00:00:{i:02x}") for i in range(10, 20)]
    mixed = [record("192.0.2.40", "02:00:00:00:00:40"), record("192.0.2.30", "bad-mac")]
    error, _violations = expect_error(
        lambda: stub.BulkApplyLookupRecords(iter([policy_pb2.BulkApplyLookupRecordsRequest(upserts=mixed)])),
        INVALID,
        "requests[0].upserts[1].mac",
    )
    assert "0 records applied" in (error.details() or "")
    assert memory_kv.current_revision() == before
    later = [record("192.0.2.50", "02:00:00:00:00:50")]
    requests = [
        policy_pb2.BulkApplyLookupRecordsRequest(upserts=good),
        policy_pb2.BulkApplyLookupRecordsRequest(upserts=[*later, record("192.0.2.30", "bad-mac")]),
        policy_pb2.BulkApplyLookupRecordsRequest(upserts=later),
    ]
    error, _violations = expect_error(
        lambda: stub.BulkApplyLookupRecords(iter(requests)), INVALID, "requests[1].upserts[1].mac"
    )
    # The messages before the bad one are applied, and the error says so; nothing after it is.
    assert "10 records applied" in (error.details() or "")
    listed = stub.ListLookupRecords(
        policy_pb2.ListLookupRecordsRequest(page=types_pb2.PageRequest(page_size=1000))
    )
    assert sorted(r.ca for r in listed.lookup_records) == sorted(r.ca for r in good)


def test_bulk_apply_failure_says_how_many_were_applied(stub: Stub) -> None:
    seed(stub)
    records = [record(f"192.0.2.{i}", f"02:00:00:00:00:{i:02x}") for i in range(10, 110)]
    records.append(record("192.0.2.200", "02:00:00:00:00:0a"))  # the MAC of 192.0.2.10
    error, _violations = expect_error(
        lambda: stub.BulkApplyLookupRecords(
            iter([policy_pb2.BulkApplyLookupRecordsRequest(upserts=records)])
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "requests[0].upserts[100].mac",
    )
    assert "100 records applied" in (error.details() or "")
    listed = stub.ListLookupRecords(
        policy_pb2.ListLookupRecordsRequest(page=types_pb2.PageRequest(page_size=1000))
    )
    assert len(listed.lookup_records) == 100


def test_lost_store_is_unavailable(stub: Stub, memory_kv: MemoryKV) -> None:
    seed(stub)
    memory_kv.set_available(False)
    expect_error(
        lambda: create_record(stub, record("192.0.2.10", "02:00:00:00:00:01")), grpc.StatusCode.UNAVAILABLE
    )
    expect_error(
        lambda: stub.ListLookupRecords(policy_pb2.ListLookupRecordsRequest()), grpc.StatusCode.UNAVAILABLE
    )


def test_a_flood_of_bad_records_reports_the_first_violations(stub: Stub) -> None:
    seed(stub)
    bad = [record(f"192.0.2.{i % 250}", "not-a-mac") for i in range(5000)]
    error, violations = expect_error(
        lambda: stub.BulkApplyLookupRecords(iter([policy_pb2.BulkApplyLookupRecordsRequest(upserts=bad)])),
        INVALID,
        "requests[0].upserts[0].mac",
    )
    # The first ones, as many as the status has room for (at most 50), and the message says how many.
    assert 20 <= len(violations) <= 50
    assert list(violations) == [f"requests[0].upserts[{i}].mac" for i in range(len(violations))]
    details = error.details() or ""
    assert "5000 invalid records" in details
    assert f"the first {len(violations)} are listed" in details


def test_a_bulk_stream_cancelled_by_its_client_keeps_whole_transactions_and_logs_no_error(
    stub: Stub, memory_kv: MemoryKV, policy_server: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    seed(stub)
    records = [record(f"192.0.2.{i + 2}", f"02:00:00:00:01:{i:02x}") for i in range(200)]
    sent = threading.Event()
    release = threading.Event()

    def requests() -> Iterator[policy_pb2.BulkApplyLookupRecordsRequest]:
        yield policy_pb2.BulkApplyLookupRecordsRequest(upserts=records)
        sent.set()
        release.wait(10)

    call = stub.BulkApplyLookupRecords.future(requests())
    assert sent.wait(10)
    # The first message fills full transactions; wait until they are in before cancelling.
    deadline = time.monotonic() + 10
    while check_invariants(memory_kv) < 120 and time.monotonic() < deadline:
        time.sleep(0.01)
    call.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    stored = check_invariants(memory_kv)
    # Whole transactions of the stream's first records, and not the records still waiting for more.
    assert 120 <= stored < len(records)
    # A graceful stop waits for the handler to end, so whatever it logs is in by then.
    policy_server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
