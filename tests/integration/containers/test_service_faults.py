"""Faults of etcd and of the services themselves, with the policy service and two vswitch agents (in
table-only mode) in containers: nothing acknowledged is lost, nothing hangs past its deadline, and
every agent converges to the store (``OverlandStack.check`` after each scenario).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from overland.v1 import policy_pb2, types_pb2
from services.common.schema import keys
from tests.integration.containers.harness import (
    DEADLINE_SLACK_SECONDS,
    ELECTION_TIMEOUT_MS,
    Timings,
    Writer,
    wait_until,
)
from tests.integration.containers.stack import (
    CALL_TIMEOUT_SECONDS,
    SERVICE_ETCD_TIMEOUT_SECONDS,
    Agent,
    OverlandStack,
)
from tests.unit.policy.support import PA_1, PA_2, VSID, Seeded, ca_of, mac_of, record, seed

# CAs of the seeded subnet (192.0.2.0/24) the single-record writers use.
SEEDED_CAS = 256
WRITE_TIMEOUT_SECONDS = 90.0
# A policy request makes a few etcd calls, each bounded by the service's etcd deadline; more than this
# means something waited without a deadline.
POLICY_CALL_BOUND_SECONDS = 4 * SERVICE_ETCD_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
RESUME_BOUND_SECONDS = 2 * ELECTION_TIMEOUT_MS / 1000 + POLICY_CALL_BOUND_SECONDS
# An agent whose watch runs through a frozen member notices when the stream stays silent past the
# agent's watch idle timeout (10 s), then resumes on another member; three times that, for a loaded box.
MOVE_ON_TIMEOUT_SECONDS = 30.0
BULK_VSIDS = (VSID + 1, VSID + 2, VSID + 3, VSID + 4)
BULK_PER_VSID = 750
BULK_CHUNK = 500


def record_writer(stack: OverlandStack, first: int = 0) -> Writer:
    """Creates lookup records one by one through the policy service (CAs from ``first`` on)."""

    def attempt(number: int) -> str:
        index = first + number
        assert index < SEEDED_CAS, "the seeded subnet has no CA left"
        created = stack.policy_stub.CreateLookupRecord(
            policy_pb2.CreateLookupRecordRequest(
                lookup_record=record(ca_of(index), mac_of(index), pa=(PA_1, PA_2)[index % 2])
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        return str(created.ca)

    return Writer(attempt, (grpc.RpcError,), lambda: "policy")


def stored_cas(stack: OverlandStack, rdid: str, vsid: int = VSID) -> set[str]:
    return {
        kv.key.decode().rsplit("/", 1)[1] for kv in stack.store.range(keys.records_prefix(rdid, vsid)).kvs
    }


def assert_policy_bounded(writer: Writer) -> None:
    longest = writer.longest_call()
    assert longest <= POLICY_CALL_BOUND_SECONDS, f"a policy call took {longest:.2f} s"
    for failed in (r for r in writer.records if not r.ok):
        assert "UNAVAILABLE" in failed.error or "DEADLINE_EXCEEDED" in failed.error, failed.error


def assert_stored(stack: OverlandStack, cas: list[str], seeded: Seeded) -> None:
    missing = set(cas) - stored_cas(stack, seeded.rdid)
    assert not missing, f"acknowledged records lost: {sorted(missing)[:5]}"


def begin(stack: OverlandStack, writes: int) -> tuple[Seeded, Writer]:
    """Seed the table, make ``writes`` records through the policy service and let the agents apply them."""
    seeded = seed(stack.policy_stub)
    writer = record_writer(stack)
    writer.write_until(writes, WRITE_TIMEOUT_SECONDS)
    stack.wait_applied("before the fault")
    return seeded, writer


def test_leader_killed_policy_writes_resume_and_agents_converge(
    overland_stack: OverlandStack, timings: Timings
) -> None:
    scenario = "services: etcd leader killed"
    stack, cluster = overland_stack, overland_stack.cluster
    seeded, writer = begin(stack, 10)
    leader = cluster.leader()
    fault_at = time.monotonic()
    cluster.kill(leader)
    writer.write_until(10, WRITE_TIMEOUT_SECONDS)
    outage = writer.outage_after(fault_at)
    timings.add(scenario, "policy writes resumed after", outage)
    assert outage <= RESUME_BOUND_SECONDS, f"policy writes resumed only after {outage:.2f} s"
    assert_policy_bounded(writer)
    with timings.measure(scenario, "agents applied the writes (leader still down)"):
        stack.wait_applied("(leader down)")

    with timings.measure(scenario, "old leader back, all converged"):
        cluster.start_member(leader)
        cluster.wait_healthy([leader])
        cluster.wait_converged()
        stack.check()
    assert_stored(stack, writer.acknowledged, seeded)


def test_paused_and_cut_off_members_clients_move_on(overland_stack: OverlandStack, timings: Timings) -> None:
    scenario = "services: etcd member paused / cut off"
    stack, cluster = overland_stack, overland_stack.cluster
    seeded, writer = begin(stack, 5)
    leader = cluster.leader()
    paused, cut_off = (m for m in cluster.members if m is not leader)

    def ride_out(name: str) -> None:
        fault_at = time.monotonic()
        writer.write_until(10, WRITE_TIMEOUT_SECONDS)
        timings.add(scenario, f"{name}: policy writes went on after", writer.outage_after(fault_at))
        # Each member is the first endpoint of one service: that one must have moved on to follow.
        with timings.measure(scenario, f"{name}: agents applied the writes"):
            stack.wait_applied(f"({name})", MOVE_ON_TIMEOUT_SECONDS)

    cluster.pause(paused)
    try:
        ride_out("member paused")
    finally:
        cluster.unpause(paused)
    cluster.disconnect(cut_off)
    try:
        ride_out("member cut off")
    finally:
        cluster.reconnect(cut_off)
    assert_policy_bounded(writer)

    with timings.measure(scenario, "healed, all converged"):
        cluster.wait_healthy()
        cluster.wait_converged()
        stack.check()
    assert_stored(stack, writer.acknowledged, seeded)


def test_whole_etcd_restart_agents_resume_without_a_flush(
    overland_stack: OverlandStack, timings: Timings
) -> None:
    scenario = "services: all of etcd restarted"
    stack, cluster = overland_stack, overland_stack.cluster
    seeded, writer = begin(stack, 20)
    before = {agent.service.name: agent.status() for agent in stack.agents}

    with timings.measure(scenario, "etcd stopped and started"):
        cluster.restart_all()
    fault_at = time.monotonic()
    writer.write_until(10, WRITE_TIMEOUT_SECONDS)
    timings.add(scenario, "policy writes resumed after quorum", writer.outage_after(fault_at))
    with timings.measure(scenario, "agents converged"):
        stack.check()
    for agent in stack.agents:
        after = agent.status()
        earlier = before[agent.service.name]
        # Resumed from their revision: no new cold sync and no reset, though their streams broke.
        assert after.syncs == earlier.syncs, f"{agent.service.name} re-synced the whole table"
        assert after.resets_after_compaction == earlier.resets_after_compaction
        assert after.stream_breaks > earlier.stream_breaks, f"{agent.service.name} never saw etcd go"
    assert_stored(stack, writer.acknowledged, seeded)
    assert_policy_bounded(writer)


def test_compaction_while_an_agent_is_stopped_relists(
    overland_stack: OverlandStack, timings: Timings
) -> None:
    scenario = "services: compaction while an agent is stopped"
    stack, cluster = overland_stack, overland_stack.cluster
    seeded, writer = begin(stack, 20)
    stopped: Agent = stack.agents[1]
    before = stopped.status()

    # Frozen (SIGSTOP via the cgroup freezer) while every etcd member restarts, its watch streams
    # break under it; the deletes and the compaction then happen before it can resume.
    stopped.service.container.pause()
    try:
        cluster.restart_all()
        removed = writer.acknowledged[:8]
        for ca in removed:
            stack.policy_stub.DeleteLookupRecord(
                policy_pb2.DeleteLookupRecordRequest(vsid=seeded.vsid, ca=ca), timeout=CALL_TIMEOUT_SECONDS
            )
        writer.write_until(5, WRITE_TIMEOUT_SECONDS)
        stack.store.compact(stack.store.current_revision())
    finally:
        stopped.service.container.unpause()
    with timings.measure(scenario, "stopped agent re-listed and converged"):
        stack.check()
    after = stopped.status()
    assert after.resets_after_compaction > before.resets_after_compaction, "the agent did not re-list"
    held = {r.ca for r in stopped.dump().lookup_records}
    assert not held & set(removed), "the agent kept records deleted while it was stopped"
    assert set(writer.acknowledged[8:]) <= held
    assert_stored(stack, writer.acknowledged[8:], seeded)


def bulk_requests(
    records: list[types_pb2.LookupRecord],
) -> Iterator[policy_pb2.BulkApplyLookupRecordsRequest]:
    for start in range(0, len(records), BULK_CHUNK):
        yield policy_pb2.BulkApplyLookupRecordsRequest(upserts=records[start : start + BULK_CHUNK])


def test_policy_killed_during_bulk_apply_retry_completes(
    overland_stack: OverlandStack, timings: Timings
) -> None:
    scenario = "services: policy killed mid bulk apply"
    stack = overland_stack
    stub = stack.policy_stub
    seed(stub)
    # One routing domain per VSID: the four subnets reuse the same CA space, as tenants do.
    rdids = {}
    for vsid in BULK_VSIDS:
        domain = stub.CreateRoutingDomain(
            policy_pb2.CreateRoutingDomainRequest(
                routing_domain=types_pb2.RoutingDomain(tenant_name=f"t{vsid}")
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        rdids[vsid] = domain.rdid
        stub.CreateVirtualSubnet(
            policy_pb2.CreateVirtualSubnetRequest(
                virtual_subnet=types_pb2.VirtualSubnet(
                    vsid=vsid,
                    rdid=domain.rdid,
                    ca_prefixes=["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"],
                )
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
    records = [
        record(ca_of(i), mac_of(i), pa=(PA_1, PA_2)[i % 2], vsid=vsid)
        for vsid in BULK_VSIDS
        for i in range(BULK_PER_VSID)
    ]
    total = len(records)
    order = [(r.vsid, r.ca) for r in records]

    def stored() -> set[tuple[int, str]]:
        return {(vsid, ca) for vsid, rdid in rdids.items() for ca in stored_cas(stack, rdid, vsid)}

    call = stub.BulkApplyLookupRecords.future(bulk_requests(records), timeout=CALL_TIMEOUT_SECONDS)
    started = time.monotonic()
    at_kill = wait_until("the bulk apply to commit its first transaction", lambda: len(stored()), 60.0)
    assert stack.policy is not None
    stack.policy.kill()
    timings.add(scenario, f"killed after {at_kill}/{total} records", time.monotonic() - started)
    assert at_kill < total, "the bulk apply finished before the kill; nothing was tested"
    with pytest.raises(grpc.RpcError) as cut_short:
        call.result()
    assert cut_short.value.code() == grpc.StatusCode.UNAVAILABLE

    # Transactions commit in stream order and atomically: what is stored is a prefix of the stream.
    partial = stored()
    assert partial == set(order[: len(partial)]), "the table holds records out of the applied order"
    assert len(partial) < total
    stack.check()

    with timings.measure(scenario, "policy restarted, bulk retried"):
        stack.policy.start()
        again = stub.BulkApplyLookupRecords(bulk_requests(records), timeout=CALL_TIMEOUT_SECONDS)
    assert again.applied == total
    assert stored() == set(order)
    with timings.measure(scenario, "agents converged"):
        assert stack.check() == total
