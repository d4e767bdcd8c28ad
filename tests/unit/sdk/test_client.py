"""The blocking PolicyClient against a real gRPC server (the in-memory fake): calls, paging, retries,
deadlines, mapped errors with field violations, watch resume and bulk apply."""

from __future__ import annotations

import threading
from dataclasses import replace

import grpc
import pytest

import overland
from overland import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PolicyClient,
    UnavailableError,
)
from overland.v1 import types_pb2
from tests.unit.sdk.conftest import FAST_RETRY, Running, seed


def _record(index: int, vsid: int = 5001) -> types_pb2.LookupRecord:
    return types_pb2.LookupRecord(
        ca=f"192.0.2.{index}",
        vsid=vsid,
        mac=f"00:15:5d:00:00:{index:02x}",
        pa="198.18.0.1",
        vm_name=f"vm{index}",
    )


def test_create_get_update_delete_round_trip(policy: PolicyClient) -> None:
    seed(policy)
    created = policy.create_lookup_record(
        ca="192.0.2.10", vsid=5001, mac="00:15:5d:00:00:0a", pa="198.18.0.1", vm_name="web"
    )
    assert created.revision > 0
    assert created.rule == types_pb2.LOOKUP_RULE_ENCAP
    fetched = policy.get_lookup_record(vsid=5001, ca="192.0.2.10")
    assert fetched == created
    fetched.vm_name = "web-2"
    updated = policy.update_lookup_record(lookup_record=fetched, expected_revision=fetched.revision)
    assert updated.vm_name == "web-2"
    assert updated.revision > created.revision
    deleted = policy.delete_lookup_record(vsid=5001, ca="192.0.2.10")
    assert deleted.revision > updated.revision
    with pytest.raises(NotFoundError):
        policy.get_lookup_record(vsid=5001, ca="192.0.2.10")


def test_list_iterates_every_page(policy_server: Running) -> None:
    config = policy_server.config()
    with PolicyClient(config=config) as client:
        seed(client)
        for index in range(1, 26):
            client.create_lookup_record(
                **{k: getattr(_record(index), k) for k in ("ca", "vsid", "mac", "pa")}
            )
        small_pages = client.list_lookup_records(vsid=5001, page=types_pb2.PageRequest(page_size=4))
        cas = [record.ca for record in small_pages]
    assert sorted(cas) == sorted(f"192.0.2.{i}" for i in range(1, 26))
    # 25 records in pages of 4: seven calls, each carrying the previous page's token.
    assert policy_server.fake.calls["ListLookupRecords"] == 7


def test_default_page_size_comes_from_config(policy_server: Running) -> None:
    with PolicyClient(config=replace(policy_server.config(), page_size=2)) as client:
        for tenant in ("a", "b", "c", "d", "e"):
            client.create_routing_domain(tenant_name=tenant)
        names = [d.tenant_name for d in client.list_routing_domains()]
    assert sorted(names) == ["a", "b", "c", "d", "e"]
    assert policy_server.fake.calls["ListRoutingDomains"] == 3


def test_idempotent_call_is_retried_on_unavailable(policy_server: Running, policy: PolicyClient) -> None:
    rdid = seed(policy)
    policy_server.fake.faults["GetRoutingDomain"] = [grpc.StatusCode.UNAVAILABLE] * 2
    assert policy.get_routing_domain(rdid=rdid).tenant_name == "contoso"
    assert policy_server.fake.calls["GetRoutingDomain"] == 3


def test_retries_give_up_after_max_attempts(policy_server: Running, policy: PolicyClient) -> None:
    policy_server.fake.faults["GetTableStatus"] = [grpc.StatusCode.UNAVAILABLE] * 10
    with pytest.raises(UnavailableError):
        policy.get_table_status()
    assert policy_server.fake.calls["GetTableStatus"] == FAST_RETRY.max_attempts


def test_create_is_not_retried(policy_server: Running, policy: PolicyClient) -> None:
    policy_server.fake.faults["CreateRoutingDomain"] = [grpc.StatusCode.UNAVAILABLE]
    with pytest.raises(UnavailableError):
        policy.create_routing_domain(tenant_name="fabrikam")
    assert policy_server.fake.calls["CreateRoutingDomain"] == 1
    assert list(policy.list_routing_domains()) == []


def test_only_unavailable_is_retried(policy_server: Running, policy: PolicyClient) -> None:
    policy_server.fake.faults["GetRoutingDomain"] = [grpc.StatusCode.INTERNAL]
    with pytest.raises(overland.InternalError):
        policy.get_routing_domain(rdid="x")
    assert policy_server.fake.calls["GetRoutingDomain"] == 1


def test_deadline_fires(policy_server: Running) -> None:
    policy_server.fake.delays["GetTableStatus"] = 2.0
    with (
        PolicyClient(config=policy_server.config(timeout=0.3)) as client,
        pytest.raises(DeadlineExceededError),
    ):
        client.get_table_status()


def test_with_options_changes_the_deadline(policy_server: Running) -> None:
    policy_server.fake.delays["GetTableStatus"] = 0.5
    with PolicyClient(config=policy_server.config(timeout=0.2)) as client:
        assert client.with_options(timeout=5).get_table_status().revision >= 1
        with pytest.raises(DeadlineExceededError):
            client.get_table_status()


def test_unreachable_server_is_unavailable_after_retries() -> None:
    # A port nobody listens on: 127.0.0.1:1 is privileged and unused.
    config = overland.ClientConfig(
        endpoints={overland.Service.POLICY: overland.Endpoint("127.0.0.1:1")}, timeout=2, retry=FAST_RETRY
    )
    with PolicyClient(config=config) as client, pytest.raises(UnavailableError):
        client.get_table_status()


def test_field_violations_reach_the_exception(policy: PolicyClient) -> None:
    seed(policy)
    with pytest.raises(InvalidArgumentError) as caught:
        policy.create_lookup_record(ca="192.0.2.300", vsid=5001, mac="nope", pa="198.18.0.1")
    fields = {v.field: v.description for v in caught.value.field_violations}
    assert set(fields) == {"lookup_record.ca", "lookup_record.mac"}
    assert "MAC" in fields["lookup_record.mac"]
    assert "lookup_record.mac" in str(caught.value)


def test_status_codes_map_to_exception_classes(policy: PolicyClient) -> None:
    seed(policy)
    with pytest.raises(FailedPreconditionError) as unknown_pa:
        policy.create_lookup_record(ca="192.0.2.9", vsid=5001, mac="00:15:5d:00:00:09", pa="198.18.9.9")
    assert unknown_pa.value.field_violations[0].field == "lookup_record.pa"
    policy.create_lookup_record(ca="192.0.2.9", vsid=5001, mac="00:15:5d:00:00:09", pa="198.18.0.1")
    with pytest.raises(AlreadyExistsError):
        policy.create_lookup_record(ca="192.0.2.9", vsid=5001, mac="00:15:5d:00:00:09", pa="198.18.0.1")
    stale = policy.get_lookup_record(vsid=5001, ca="192.0.2.9")
    policy.update_lookup_record(lookup_record=stale, expected_revision=stale.revision)
    with pytest.raises(AbortedError):
        policy.update_lookup_record(lookup_record=stale, expected_revision=stale.revision)


def test_bulk_apply_streams_chunks(policy_server: Running, policy: PolicyClient) -> None:
    seed(policy)
    records = (_record(index) for index in range(1, 101))
    result = policy.bulk_apply(records, chunk=30)
    assert result.applied == 100
    # 100 records in chunks of 30: four stream messages.
    assert policy_server.fake.bulk_messages == 4
    assert len(list(policy.list_lookup_records(vsid=5001))) == 100


def test_bulk_apply_is_not_retried(policy_server: Running, policy: PolicyClient) -> None:
    seed(policy)
    policy_server.fake.faults["BulkApplyLookupRecords"] = [grpc.StatusCode.UNAVAILABLE]
    with pytest.raises(UnavailableError):
        policy.bulk_apply([_record(1)])
    assert policy_server.fake.calls["BulkApplyLookupRecords"] == 1


def test_bulk_apply_rejects_a_bad_chunk_size(policy: PolicyClient) -> None:
    with pytest.raises(overland.ConfigurationError):
        policy.bulk_apply([_record(1)], chunk=0)


def test_watch_delivers_changes_after_start_revision(policy: PolicyClient) -> None:
    start = policy.get_table_status().revision
    for tenant in ("a", "b", "c"):
        policy.create_routing_domain(tenant_name=tenant)
    stream = policy.watch_table(start_revision=start)
    tenants = [next(stream).events[0].entry.routing_domain.tenant_name for _ in range(3)]
    stream.close()
    assert tenants == ["a", "b", "c"]


def test_watch_resumes_after_a_broken_stream_without_loss_or_repeat(
    policy_server: Running, policy: PolicyClient
) -> None:
    start = policy.get_table_status().revision
    for tenant in ("a", "b", "c", "d"):
        policy.create_routing_domain(tenant_name=tenant)
    policy_server.fake.watch_break_after = 2
    stream = policy.watch_table(start_revision=start)
    revisions = [next(stream).revision for _ in range(4)]
    stream.close()
    assert revisions == sorted(set(revisions))
    assert len(revisions) == 4
    assert policy_server.fake.calls["WatchTable"] == 2


def test_watch_sees_a_write_made_while_it_waits(policy: PolicyClient) -> None:
    stream = policy.watch_table(start_revision=policy.get_table_status().revision)
    writer = threading.Timer(0.2, lambda: policy.create_routing_domain(tenant_name="late"))
    writer.start()
    response = next(stream)
    stream.close()
    writer.join()
    assert response.events[0].entry.routing_domain.tenant_name == "late"


def test_endpoint_argument_overrides_config(policy_server: Running) -> None:
    config = overland.ClientConfig(timeout=2, retry=FAST_RETRY)
    with PolicyClient(policy_server.address, config=config) as client:
        assert client.get_table_status().revision >= 1
