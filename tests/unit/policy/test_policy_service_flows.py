"""Happy paths through a real gRPC server over MemoryKV: CRUD, bulk upserts, paging, watch,
next-hop selection, table status, health and reflection."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.kv import Delete, Put, WatchBacklog
from services.common.memory_kv import MemoryKV, MemoryWatch
from services.common.schema import encode_entry, keys
from services.policy import PolicyServer

from .support import (
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

Stub = policy_pb2_grpc.PolicyServiceStub


def bulk(
    stub: Stub,
    upserts: list[types_pb2.LookupRecord],
    deletes: Sequence[types_pb2.LookupRecord] = (),
    chunk: int = 100,
) -> policy_pb2.BulkApplyLookupRecordsResponse:
    requests = [
        policy_pb2.BulkApplyLookupRecordsRequest(upserts=upserts[i : i + chunk])
        for i in range(0, len(upserts), chunk)
    ]
    if deletes:
        requests.append(policy_pb2.BulkApplyLookupRecordsRequest(deletes=deletes))
    return stub.BulkApplyLookupRecords(iter(requests))


def list_all(
    stub: Stub,
    page_size: int,
    *,
    vsid: int | None = None,
    rdid: str | None = None,
    pa: str | None = None,
) -> tuple[list[types_pb2.LookupRecord], int, set[int]]:
    token, pages = "", 0
    found: list[types_pb2.LookupRecord] = []
    revisions: set[int] = set()
    while True:
        response = stub.ListLookupRecords(
            policy_pb2.ListLookupRecordsRequest(
                page=types_pb2.PageRequest(page_size=page_size, page_token=token), vsid=vsid, rdid=rdid, pa=pa
            )
        )
        found.extend(response.lookup_records)
        revisions.add(response.revision)
        pages += 1
        token = response.next_page_token
        if not token:
            return found, pages, revisions


def test_record_lifecycle_normalizes_and_moves_the_mac_index(stub: Stub, memory_kv: MemoryKV) -> None:
    seeded = seed(stub)
    created = stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(
            lookup_record=record("192.0.2.10", "AA-BB-CC-00-00-01", vm="web 1")
        )
    )
    assert (created.mac, created.rdid, created.rule, created.type) == (
        "aa:bb:cc:00:00:01",
        seeded.rdid,
        types_pb2.LOOKUP_RULE_ENCAP,
        types_pb2.LOOKUP_TYPE_STATIC,
    )
    assert stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca="192.0.2.10")) == created
    moved = stub.UpdateLookupRecord(
        policy_pb2.UpdateLookupRecordRequest(lookup_record=record("192.0.2.10", "aa:bb:cc:00:00:02", pa=PA_2))
    )
    assert (moved.pa, moved.mac) == (PA_2, "aa:bb:cc:00:00:02")
    assert memory_kv.get(keys.mac_index_key(VSID, "aa:bb:cc:00:00:01")) is None
    # The released MAC is free for another CA now.
    stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.11", "aa:bb:cc:00:00:01"))
    )
    assert check_invariants(memory_kv) == 2


def test_domain_subnet_pa_and_route_crud(stub: Stub) -> None:
    seeded = seed(stub)
    domain = stub.UpdateRoutingDomain(
        policy_pb2.UpdateRoutingDomainRequest(
            routing_domain=types_pb2.RoutingDomain(
                rdid=seeded.rdid, tenant_name="Contoso Ltd", description="d"
            )
        )
    )
    assert domain.tenant_name == "Contoso Ltd"
    subnet = stub.UpdateVirtualSubnet(
        policy_pb2.UpdateVirtualSubnetRequest(
            virtual_subnet=types_pb2.VirtualSubnet(vsid=VSID, ca_prefixes=["192.0.2.0/24", "198.51.100.0/24"])
        )
    )
    assert list(subnet.ca_prefixes) == ["192.0.2.0/24", "198.51.100.0/24"]
    assert subnet.gateway_ip == "192.0.2.1"
    pa = stub.UpdateProviderAddress(
        policy_pb2.UpdateProviderAddressRequest(
            provider_address=types_pb2.ProviderAddress(
                host_name="renamed", pa_ip=PA_1, prefix_length=16, vlan_id=10
            )
        )
    )
    assert (pa.host_name, pa.vlan_id) == ("renamed", 10)
    route = stub.CreateCustomerRoute(
        policy_pb2.CreateCustomerRouteRequest(
            customer_route=types_pb2.CustomerRoute(
                rdid=seeded.rdid,
                vsid=VSID,
                destination_prefix="203.0.113.0/24",
                next_hop="192.0.2.254",
                metric=5,
            )
        )
    )
    changed = stub.UpdateCustomerRoute(
        policy_pb2.UpdateCustomerRouteRequest(
            customer_route=types_pb2.CustomerRoute(
                rdid=seeded.rdid,
                vsid=VSID,
                destination_prefix="203.0.113.0/24",
                next_hop="192.0.2.254",
                metric=1,
            ),
            expected_revision=route.revision,
        )
    )
    assert changed.metric == 1
    routes = stub.ListCustomerRoutes(policy_pb2.ListCustomerRoutesRequest(rdid=seeded.rdid))
    assert [r.destination_prefix for r in routes.customer_routes] == ["203.0.113.0/24"]
    expect_error(
        lambda: stub.DeleteVirtualSubnet(policy_pb2.DeleteVirtualSubnetRequest(vsid=VSID)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    stub.DeleteCustomerRoute(
        policy_pb2.DeleteCustomerRouteRequest(
            rdid=seeded.rdid, vsid=VSID, destination_prefix="203.0.113.0/24", next_hop="192.0.2.254"
        )
    )
    stub.DeleteVirtualSubnet(policy_pb2.DeleteVirtualSubnetRequest(vsid=VSID))
    subnets = stub.ListVirtualSubnets(policy_pb2.ListVirtualSubnetsRequest(rdid=seeded.rdid))
    assert not subnets.virtual_subnets


def test_bulk_upserts_are_idempotent_and_span_transactions(stub: Stub, memory_kv: MemoryKV) -> None:
    seed(stub)
    records = [record(ca_of(i), mac_of(i), pa=(PA_1, PA_2)[i % 2]) for i in range(600)]
    first = bulk(stub, records)
    assert first.applied == 600
    assert first.transactions >= 600 * 2 // memory_kv.max_txn_ops
    revision = memory_kv.current_revision()
    again = bulk(stub, records)
    assert (again.applied, again.transactions) == (600, 0)
    assert memory_kv.current_revision() == revision
    # Changes apply in order: record 0 leaves its MAC for a new one, then record 1 takes it.
    moves = [
        record(ca_of(0), mac_of(1000)),
        record(ca_of(1), mac_of(0)),
        record(ca_of(2), mac_of(2), pa=PA_2),
    ]
    third = bulk(stub, moves)
    assert third.applied == 3
    assert stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca=ca_of(1))).mac == mac_of(0)
    # A swap in one go would need a moment where both hold the same MAC: refused, nothing half-done.
    expect_error(
        lambda: bulk(stub, [record(ca_of(0), mac_of(0)), record(ca_of(1), mac_of(1000))]),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    removed = bulk(
        stub,
        [],
        deletes=[types_pb2.LookupRecord(vsid=VSID, ca=ca_of(i)) for i in range(0, 600, 3)]
        + [
            types_pb2.LookupRecord(vsid=VSID, ca="203.0.113.250"),
            types_pb2.LookupRecord(vsid=VSID + 9, ca=ca_of(1)),
        ],
    )
    assert removed.applied == 202
    assert check_invariants(memory_kv) == 400


def test_record_writes_touch_their_pa_reference_once_per_transaction(stub: Stub, memory_kv: MemoryKV) -> None:
    seed(stub)
    ref = keys.pa_ref_key(PA_1)
    first = bulk(stub, [record(ca_of(i), mac_of(i)) for i in range(3)])
    assert (first.applied, first.transactions) == (3, 1)
    touched = memory_kv.get(ref)
    assert touched is not None
    assert touched.version == 1
    stub.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=record(ca_of(9), mac_of(9))))
    stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca=ca_of(0)))
    again = memory_kv.get(ref)
    assert again is not None
    # The create touched it; the delete did not (fewer users cannot break a PA's delete).
    assert again.version == 2
    assert memory_kv.get(keys.pa_ref_key(PA_2)) is None


def test_paging_reads_one_snapshot(stub: Stub) -> None:
    seeded = seed(stub)
    bulk(stub, [record(ca_of(i), mac_of(i)) for i in range(250)])
    first = stub.ListLookupRecords(
        policy_pb2.ListLookupRecordsRequest(page=types_pb2.PageRequest(page_size=100))
    )
    # A write after the first page does not show up in later pages of the same listing.
    bulk(stub, [record(ca_of(300), mac_of(300))])
    found = list(first.lookup_records)
    token = first.next_page_token
    while token:
        page = stub.ListLookupRecords(
            policy_pb2.ListLookupRecordsRequest(page=types_pb2.PageRequest(page_size=100, page_token=token))
        )
        assert page.revision == first.revision
        found.extend(page.lookup_records)
        token = page.next_page_token
    assert len(found) == 250
    assert len({r.ca for r in found}) == 250
    by_vsid, pages, _ = list_all(stub, 7, vsid=VSID)
    assert len(by_vsid) == 251
    assert pages == 36
    by_rdid, _, _ = list_all(stub, 1000, rdid=seeded.rdid)
    assert len(by_rdid) == 251
    by_pa, _, _ = list_all(stub, 50, pa=PA_2)
    assert by_pa == []


def test_listing_across_domains_and_paging_past_a_compaction(stub: Stub, memory_kv: MemoryKV) -> None:
    for index in range(3):
        add_tenant(stub, VSID + index, f"t{index}", ("192.0.2.0/24",))
    domains = stub.ListRoutingDomains(
        policy_pb2.ListRoutingDomainsRequest(page=types_pb2.PageRequest(page_size=2))
    )
    assert len(domains.routing_domains) == 2
    assert domains.next_page_token
    rest = stub.ListRoutingDomains(
        policy_pb2.ListRoutingDomainsRequest(
            page=types_pb2.PageRequest(page_size=2, page_token=domains.next_page_token)
        )
    )
    assert len(rest.routing_domains) == 1
    assert not rest.next_page_token
    subnets = stub.ListVirtualSubnets(policy_pb2.ListVirtualSubnetsRequest())
    assert sorted(s.vsid for s in subnets.virtual_subnets) == [VSID, VSID + 1, VSID + 2]
    stub.CreateProviderAddress(
        policy_pb2.CreateProviderAddressRequest(
            provider_address=types_pb2.ProviderAddress(host_name="h", pa_ip=PA_1, prefix_length=24)
        )
    )
    memory_kv.compact(memory_kv.current_revision())
    _error, _ = expect_error(
        lambda: stub.ListRoutingDomains(
            policy_pb2.ListRoutingDomainsRequest(
                page=types_pb2.PageRequest(page_size=2, page_token=domains.next_page_token)
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_watch_streams_changes_from_a_revision(stub: Stub, memory_kv: MemoryKV) -> None:
    seeded = seed(stub)
    other = stub.CreateRoutingDomain(
        policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name="Other"))
    )
    start = memory_kv.current_revision()
    created = stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.10", mac_of(1)))
    )
    stub.CreateVirtualSubnet(
        policy_pb2.CreateVirtualSubnetRequest(
            virtual_subnet=types_pb2.VirtualSubnet(
                vsid=VSID + 9, rdid=other.rdid, ca_prefixes=["192.0.2.0/24"]
            )
        )
    )
    stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca="192.0.2.10"))
    stub.CreateProviderAddress(
        policy_pb2.CreateProviderAddressRequest(
            provider_address=types_pb2.ProviderAddress(host_name="h9", pa_ip="198.18.0.9", prefix_length=24)
        )
    )
    end = memory_kv.current_revision()
    events = watch_until(stub, policy_pb2.WatchTableRequest(start_revision=start, rdids=[seeded.rdid]), end)
    kinds = [(e.type, e.key.rsplit("/", 2)[-2]) for e in events]
    assert kinds == [
        (types_pb2.TableEvent.TYPE_PUT, VSID_HEX),
        (types_pb2.TableEvent.TYPE_DELETE, VSID_HEX),
        (types_pb2.TableEvent.TYPE_PUT, "pa"),
    ]
    assert events[0].entry.lookup_record.ca == "192.0.2.10"
    assert events[0].revision == created.revision
    assert events[1].entry.lookup_record.mac == mac_of(1)
    memory_kv.compact(end)
    compacted = stub.WatchTable(policy_pb2.WatchTableRequest(start_revision=start))
    _error, violations = expect_error(
        lambda: next(iter(compacted)), grpc.StatusCode.FAILED_PRECONDITION, "start_revision"
    )
    assert str(end) in violations["start_revision"]


VSID_HEX = keys.vsid_segment(VSID)


def test_watch_from_now_is_cancelled_when_the_client_goes(stub: Stub, memory_kv: MemoryKV) -> None:
    seed(stub)
    cancelled = threading.Event()
    open_watch = memory_kv.watch

    def watch(
        prefix: bytes, start_revision: int, *, prev_kv: bool = False, backlog: WatchBacklog | None = None
    ) -> MemoryWatch:
        stream = open_watch(prefix, start_revision, prev_kv=prev_kv, backlog=backlog)
        cancel = stream.cancel

        def cancel_and_note() -> None:
            cancelled.set()
            cancel()

        stream.cancel = cancel_and_note  # type: ignore[method-assign]
        return stream

    memory_kv.watch = watch  # type: ignore[method-assign]
    stream = stub.WatchTable(policy_pb2.WatchTableRequest())
    responses = iter(stream)
    # The first response is a progress notification: from then on the watch is open.
    assert not next(responses).events
    stub.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=record(ca_of(1), mac_of(1))))
    first = next(r for r in responses if r.events)
    assert first.events[0].entry.lookup_record.ca == ca_of(1)
    assert not cancelled.is_set()
    stream.cancel()
    assert cancelled.wait(10), "the etcd watch outlived the client's stream"


def test_select_next_hop_uses_the_shared_decision(stub: Stub) -> None:
    seeded = seed(stub)
    stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.10", mac_of(1)))
    )
    stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.20", mac_of(2), pa=PA_2))
    )
    answer = stub.SelectNextHop(
        policy_pb2.SelectNextHopRequest(vsid=VSID, source_ca="192.0.2.10", destination_ca="192.0.2.20")
    )
    assert (answer.found, answer.pa, answer.vsid, answer.mac) == (True, PA_2, VSID, mac_of(2))
    assert answer.reasons
    by_domain = stub.SelectNextHop(
        policy_pb2.SelectNextHopRequest(rdid=seeded.rdid, source_ca="192.0.2.10", destination_ca="192.0.2.77")
    )
    assert not by_domain.found
    assert by_domain.reasons
    expect_error(
        lambda: stub.SelectNextHop(
            policy_pb2.SelectNextHopRequest(source_ca="x", destination_ca="192.0.2.1")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "scope",
        "source_ca",
    )
    expect_error(
        lambda: stub.SelectNextHop(
            policy_pb2.SelectNextHopRequest(vsid=VSID + 5, source_ca="192.0.2.1", destination_ca="192.0.2.2")
        ),
        grpc.StatusCode.NOT_FOUND,
    )


def test_table_status_reports_host_lag(stub: Stub, memory_kv: MemoryKV) -> None:
    seed(stub)
    table_revision = memory_kv.current_revision()
    lease = memory_kv.grant_lease(30)
    behind = types_pb2.HostStatus(host_name="host0", pa_ip=PA_1, applied_revision=2)
    caught_up = types_pb2.HostStatus(host_name="host1", pa_ip=PA_2, applied_revision=table_revision)
    memory_kv.txn([], [_put_host(behind, lease.id)])
    result = memory_kv.txn([], [_put_host(caught_up, lease.id)])
    answer = stub.GetTableStatus(policy_pb2.GetTableStatusRequest())
    assert answer.revision == result.revision
    # Lag counts table changes only: the hosts' own status writes moved the store revision.
    assert [(h.host_name, h.alive, h.lag_revisions) for h in answer.hosts] == [
        ("host0", True, table_revision - 2),
        ("host1", True, 0),
    ]
    memory_kv.revoke_lease(lease.id)
    assert not stub.GetTableStatus(policy_pb2.GetTableStatusRequest()).hosts


def _put_host(status: types_pb2.HostStatus, lease: int) -> Put:
    return Put(keys.host_key(status.host_name), encode_entry(status, 0), lease=lease)


def test_health_and_reflection(policy_server: PolicyServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(f"127.0.0.1:{policy_server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service="overland.v1.PolicyService"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert "overland.v1.PolicyService" in names


def test_watch_skips_and_names_an_unreadable_value_and_goes_on(stub: Stub, memory_kv: MemoryKV) -> None:
    seeded = seed(stub)
    start = memory_kv.current_revision()
    garbage = keys.record_key(seeded.rdid, VSID, "192.0.2.200")
    wrong_kind = keys.record_key(seeded.rdid, VSID, "192.0.2.201")
    memory_kv.txn([], [Put(garbage, b"\xff\x00 not a StoreEntry")])
    memory_kv.txn(
        [],
        [
            Put(
                wrong_kind,
                encode_entry(types_pb2.ProviderAddress(pa_ip=PA_1, host_name="x", prefix_length=16), 1),
            )
        ],
    )
    stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(lookup_record=record("192.0.2.10", mac_of(1)))
    )
    memory_kv.txn([], [Delete(garbage)])
    end = memory_kv.current_revision()

    stream = stub.WatchTable(policy_pb2.WatchTableRequest(start_revision=start), timeout=30)
    events: list[types_pb2.TableEvent] = []
    unreadable: list[str] = []
    for response in stream:
        events.extend(response.events)
        unreadable.extend(entry.key for entry in response.unreadable)
        if response.revision >= end:
            break
    stream.cancel()
    # The stream went on past both: the record written after them, then the unreadable one's delete
    # (without its value, which nobody can read).
    assert unreadable == [garbage.decode(), wrong_kind.decode()]
    assert [(e.type, e.key) for e in events] == [
        (types_pb2.TableEvent.TYPE_PUT, keys.record_key(seeded.rdid, VSID, "192.0.2.10").decode()),
        (types_pb2.TableEvent.TYPE_DELETE, garbage.decode()),
    ]
    assert not events[1].HasField("entry")
