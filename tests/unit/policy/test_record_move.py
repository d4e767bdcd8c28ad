"""MoveLookupRecords and the host registry over gRPC on a MemoryKV: moves by PA and by host name, with
and without a new CA, several records in one transaction, and every error leaving the store
byte-identical. GetHost and ListHosts join registrations with the agents' leased status."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.kv import KV, Put
from services.common.memory_kv import MemoryKV
from services.common.schema import encode_entry, keys
from tests.unit.policy.support import (
    PA_1,
    PA_2,
    VSID,
    add_tenant,
    check_invariants,
    expect_error,
    record,
    seed,
)

Stub = policy_pb2_grpc.PolicyServiceStub
Move = policy_pb2.RecordMove
OTHER_VSID = 6001


def register_host(kv: KV, name: str, pa: str, *, alive: bool = True) -> None:
    """What a vswitch agent writes: its registration for good, its status on a lease."""
    host = types_pb2.Host(host_name=name, pa_ip=pa, registration_time_unix_nanos=1_700_000_000_000_000_000)
    ops = [Put(keys.registration_key(name), encode_entry(host, 1))]
    if alive:
        lease = kv.grant_lease(60)
        status = types_pb2.HostStatus(host_name=name, pa_ip=pa, applied_revision=1)
        ops.append(Put(keys.host_key(name), encode_entry(status, 1), lease=lease.id))
    kv.txn([], ops)


def snapshot(kv: KV) -> list[tuple[bytes, bytes, int]]:
    """Every key of the store, its value and mod revision: what "unchanged" means."""
    return [(kv_.key, kv_.value, kv_.mod_revision) for kv_ in kv.range(keys.ROOT).kvs]


def move(stub: Stub, *moves: Move, host: str = "", pa: str = "") -> policy_pb2.MoveLookupRecordsResponse:
    destination = {"host_name": host} if host else {"pa": pa}
    return stub.MoveLookupRecords(policy_pb2.MoveLookupRecordsRequest(moves=list(moves), **destination))


@pytest.fixture
def table(stub: Stub, memory_kv: MemoryKV) -> MemoryKV:
    """Contoso's VSID 5001 with two NICs of vm1 on PA 1 and one of vm2; Fabrikam's VSID 6001 with one."""
    seed(stub, prefix="192.0.2.0/24")
    add_tenant(stub, OTHER_VSID, "Fabrikam", ("198.51.100.0/24",))
    for created in (
        record("192.0.2.10", "02:00:00:00:00:10", vm="vm1"),
        record("192.0.2.20", "02:00:00:00:00:20", vm="vm2"),
        record("198.51.100.10", "02:00:00:00:01:10", vsid=OTHER_VSID, vm="vm1"),
    ):
        stub.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=created))
    register_host(memory_kv, "dr-host", PA_2)
    return memory_kv


def test_a_move_by_pa_changes_only_the_pa(stub: Stub, table: MemoryKV) -> None:
    moved = move(stub, Move(vsid=VSID, ca="192.0.2.10"), pa=PA_2)
    (stored,) = moved.lookup_records
    assert (stored.ca, stored.pa, stored.mac, stored.vm_name) == (
        "192.0.2.10",
        PA_2,
        "02:00:00:00:00:10",
        "vm1",
    )
    assert stored.revision == moved.revision
    assert moved.pa == PA_2
    got = stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca="192.0.2.10"))
    assert (got.pa, got.revision) == (PA_2, moved.revision)
    check_invariants(table)


def test_a_vms_nics_move_to_a_host_with_a_new_ca_in_one_transaction(stub: Stub, table: MemoryKV) -> None:
    moved = move(
        stub,
        Move(vsid=VSID, ca="192.0.2.10", new_ca="192.0.2.110"),
        Move(vsid=OTHER_VSID, ca="198.51.100.10"),
        host="dr-host",
    )
    assert [(r.vsid, r.ca, r.pa) for r in moved.lookup_records] == [
        (VSID, "192.0.2.110", PA_2),
        (OTHER_VSID, "198.51.100.10", PA_2),
    ]
    assert {r.revision for r in moved.lookup_records} == {moved.revision}
    expect_error(
        lambda: stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca="192.0.2.10")),
        grpc.StatusCode.NOT_FOUND,
    )
    # The MAC index follows the CA: the MAC still belongs to one record, the moved one.
    assert table.get(keys.mac_index_key(VSID, "02:00:00:00:00:10")).value == b"192.0.2.110"  # type: ignore[union-attr]
    assert check_invariants(table) == 3
    # And back, as a cancelled failover does.
    back = move(stub, Move(vsid=VSID, ca="192.0.2.110", new_ca="192.0.2.10"), pa=PA_1)
    assert back.lookup_records[0].ca == "192.0.2.10"
    assert check_invariants(table) == 3


def test_a_move_to_where_the_records_are_writes_nothing(stub: Stub, table: MemoryKV) -> None:
    before = snapshot(table)
    moved = move(stub, Move(vsid=VSID, ca="192.0.2.10"), pa=PA_1)
    assert moved.lookup_records[0].pa == PA_1
    assert snapshot(table) == before


ERRORS: list[tuple[str, Callable[[], dict[str, object]], grpc.StatusCode, str]] = [
    (
        "unknown record",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10"), Move(vsid=VSID, ca="192.0.2.99")], "pa": PA_2},
        grpc.StatusCode.NOT_FOUND,
        "moves[1]",
    ),
    (
        "unknown VSID",
        lambda: {"moves": [Move(vsid=7777, ca="192.0.2.10")], "pa": PA_2},
        grpc.StatusCode.NOT_FOUND,
        "moves[0]",
    ),
    (
        "host with no PA registered",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10")], "host_name": "nowhere"},
        grpc.StatusCode.FAILED_PRECONDITION,
        "host_name",
    ),
    (
        "host whose PA is not a provider address",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10")], "host_name": "stray-host"},
        grpc.StatusCode.FAILED_PRECONDITION,
        "host_name",
    ),
    (
        "PA that is not a provider address",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10")], "pa": "198.18.0.77"},
        grpc.StatusCode.FAILED_PRECONDITION,
        "pa",
    ),
    (
        "new CA outside the subnet",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10", new_ca="203.0.113.5")], "pa": PA_2},
        grpc.StatusCode.FAILED_PRECONDITION,
        "moves[0].new_ca",
    ),
    (
        "new CA taken",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10", new_ca="192.0.2.20")], "pa": PA_2},
        grpc.StatusCode.ALREADY_EXISTS,
        "moves[0].new_ca",
    ),
    (
        "new CA is the gateway",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10", new_ca="192.0.2.1")], "pa": PA_2},
        grpc.StatusCode.FAILED_PRECONDITION,
        "moves[0].new_ca",
    ),
    (
        "stale expected revision",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10", expected_revision=1)], "pa": PA_2},
        grpc.StatusCode.ABORTED,
        "moves[0].expected_revision",
    ),
    ("no records", lambda: {"pa": PA_2}, grpc.StatusCode.INVALID_ARGUMENT, "moves"),
    (
        "no destination",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10")]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "destination",
    ),
    (
        "the same record twice",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10"), Move(vsid=VSID, ca="192.0.2.10")], "pa": PA_2},
        grpc.StatusCode.INVALID_ARGUMENT,
        "moves[1].ca",
    ),
    (
        "a swap",
        lambda: {
            "moves": [
                Move(vsid=VSID, ca="192.0.2.10", new_ca="192.0.2.20"),
                Move(vsid=VSID, ca="192.0.2.20", new_ca="192.0.2.10"),
            ],
            "pa": PA_2,
        },
        grpc.StatusCode.INVALID_ARGUMENT,
        "moves[0].new_ca",
    ),
    (
        "a bad CA",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.300")], "pa": PA_2},
        grpc.StatusCode.INVALID_ARGUMENT,
        "moves[0].ca",
    ),
    (
        "a bad host name",
        lambda: {"moves": [Move(vsid=VSID, ca="192.0.2.10")], "host_name": "a/b"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "host_name",
    ),
    (
        "more than one transaction takes",
        lambda: {
            "moves": [Move(vsid=VSID, ca=f"192.0.2.{n}", new_ca=f"192.0.2.{100 + n}") for n in range(2, 52)],
            "pa": PA_2,
        },
        grpc.StatusCode.INVALID_ARGUMENT,
        "moves",
    ),
]


@pytest.mark.parametrize(("case", "request_fields", "code", "field"), ERRORS, ids=[e[0] for e in ERRORS])
def test_every_error_leaves_the_store_unchanged(
    stub: Stub,
    table: MemoryKV,
    case: str,
    request_fields: Callable[[], dict[str, object]],
    code: grpc.StatusCode,
    field: str,
) -> None:
    register_host(table, "stray-host", "198.18.0.77")
    before = snapshot(table)
    request = policy_pb2.MoveLookupRecordsRequest(**request_fields())  # type: ignore[arg-type]
    error, _ = expect_error(lambda: stub.MoveLookupRecords(request), code, field)
    assert snapshot(table) == before, case
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        assert "nothing was moved" in (error.details() or "")


def test_get_host_joins_the_registration_with_the_live_status(stub: Stub, table: MemoryKV) -> None:
    register_host(table, "stopped-host", PA_1, alive=False)
    live = stub.GetHost(policy_pb2.GetHostRequest(host_name="dr-host"))
    assert (live.host_name, live.pa_ip, live.alive) == ("dr-host", PA_2, True)
    assert live.registration_time_unix_nanos == 1_700_000_000_000_000_000
    assert live.status.applied_revision == 1
    assert live.revision > 0
    stopped = stub.GetHost(policy_pb2.GetHostRequest(host_name="stopped-host"))
    assert (stopped.pa_ip, stopped.alive, stopped.HasField("status")) == (PA_1, False, False)
    expect_error(
        lambda: stub.GetHost(policy_pb2.GetHostRequest(host_name="nowhere")),
        grpc.StatusCode.NOT_FOUND,
        "host_name",
    )
    expect_error(
        lambda: stub.GetHost(policy_pb2.GetHostRequest(host_name="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "host_name",
    )


def test_list_hosts_pages_with_each_hosts_status(stub: Stub, memory_kv: MemoryKV) -> None:
    for number in range(7):
        register_host(memory_kv, f"host-{number}", f"198.18.0.{number + 1}", alive=number % 2 == 0)
    seen: list[types_pb2.Host] = []
    token = ""
    while True:
        page = stub.ListHosts(
            policy_pb2.ListHostsRequest(page=types_pb2.PageRequest(page_size=3, page_token=token))
        )
        seen += page.hosts
        token = page.next_page_token
        if not token:
            break
    assert [h.host_name for h in seen] == [f"host-{n}" for n in range(7)]
    assert [h.alive for h in seen] == [n % 2 == 0 for n in range(7)]
    assert all(h.status.host_name == h.host_name for h in seen if h.alive)


def test_an_unreadable_status_leaves_its_host_alive_without_it(stub: Stub, memory_kv: MemoryKV) -> None:
    for number in range(3):
        register_host(memory_kv, f"host-{number}", f"198.18.0.{number + 1}")
    # A status written around the service: the host is alive (its key is there), its status unknown.
    memory_kv.txn([], [Put(keys.host_key("host-1"), b"\x0a\xff")])
    hosts = stub.ListHosts(policy_pb2.ListHostsRequest()).hosts
    assert [(h.host_name, h.alive, h.HasField("status")) for h in hosts] == [
        ("host-0", True, True),
        ("host-1", True, False),
        ("host-2", True, True),
    ]
    got = stub.GetHost(policy_pb2.GetHostRequest(host_name="host-1"))
    assert (got.alive, got.HasField("status")) == (True, False)
