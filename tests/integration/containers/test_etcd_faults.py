"""etcd cluster faults met by the services' own etcd client (``EtcdKV``): the cluster rides them out,
no acknowledged write is lost, and calls with a deadline never hang.

These scenarios need no Overland service; test_service_faults.py repeats the faults with the policy
service and the vswitch agents as the clients.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from services.common.etcd_watch import EtcdWatch
from tests.integration.containers.harness import (
    CLIENT_DEADLINE_SECONDS,
    DEADLINE_SLACK_SECONDS,
    ELECTION_TIMEOUT_MS,
    EtcdCluster,
    Member,
    Timings,
    Writer,
    key_writer,
)

# An election takes one to two election timeouts; a client may first spend one deadline on the lost
# member and one on a member that has no leader yet.
RESUME_BOUND_SECONDS = 2 * ELECTION_TIMEOUT_MS / 1000 + 2 * CLIENT_DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS
WRITE_TIMEOUT_SECONDS = 60.0


def assert_no_hang(writer: Writer) -> None:
    longest = writer.longest_call()
    assert longest <= CLIENT_DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS, f"a call hung for {longest:.2f} s"


def assert_all_acknowledged_on(writer: Writer, prefix: str, members: list[Member]) -> None:
    """Every acknowledged write is on every given member's own copy (serializable reads)."""
    assert len(writer.acknowledged) == len(set(writer.acknowledged))
    for member in members:
        with contextlib.closing(member.client()) as client:
            stored = {meta.key.decode() for _, meta in client.get_prefix(prefix, serializable=True)}
        missing = set(writer.acknowledged) - stored
        assert not missing, (
            f"{member.name} lost {len(missing)} acknowledged writes, e.g. {sorted(missing)[:3]}"
        )


def watch_keys(
    cluster: EtcdCluster, member: Member, prefix: str, start_revision: int, count: int
) -> list[str]:
    """The keys of the first ``count`` events of an ``EtcdKV`` watch on ``prefix`` from ``start_revision``."""
    seen: list[str] = []
    with contextlib.closing(cluster.kv([member.endpoint])) as kv:
        watch = kv.watch(prefix.encode(), start_revision)
        assert isinstance(watch, EtcdWatch)
        try:
            deadline = time.monotonic() + WRITE_TIMEOUT_SECONDS
            while len(seen) < count and time.monotonic() < deadline:
                batch = watch.next_batch(timeout=deadline - time.monotonic())
                if batch is not None:
                    seen.extend(event.kv.key.decode() for event in batch.events)
        finally:
            watch.cancel()
    return seen


def test_leader_killed_writes_resume_and_members_converge(
    etcd_cluster: EtcdCluster, timings: Timings
) -> None:
    scenario = "etcd leader killed"
    leader = etcd_cluster.leader()
    others = [m for m in etcd_cluster.members if m is not leader]
    # The client starts on the leader, so the first write after the fault meets the loss head-on.
    kv = etcd_cluster.kv([leader.endpoint, *(m.endpoint for m in others)])
    writer = key_writer(kv, "/scenario/leader")
    with contextlib.closing(kv):
        writer.write_until(20, WRITE_TIMEOUT_SECONDS)
        fault_at = time.monotonic()
        etcd_cluster.kill(leader)
        writer.write_until(20, WRITE_TIMEOUT_SECONDS)
        outage = writer.outage_after(fault_at)
        timings.add(scenario, "writes resumed after", outage)
        assert etcd_cluster.leader(others) is not leader
        assert outage <= RESUME_BOUND_SECONDS, f"writes resumed only after {outage:.2f} s"
        assert_no_hang(writer)

        with timings.measure(scenario, "old leader rejoined, members converged"):
            etcd_cluster.start_member(leader)
            etcd_cluster.wait_healthy([leader])
            etcd_cluster.wait_converged()
        assert_all_acknowledged_on(writer, "/scenario/leader", etcd_cluster.members)


def test_paused_and_cut_off_members_majority_keeps_writing(
    etcd_cluster: EtcdCluster, timings: Timings
) -> None:
    scenario = "etcd member paused / cut off"
    leader = etcd_cluster.leader()
    paused, cut_off = (m for m in etcd_cluster.members if m is not leader)
    with contextlib.ExitStack() as stack:
        writers = {
            prefix: key_writer(stack.enter_context(contextlib.closing(etcd_cluster.kv(endpoints))), prefix)
            for prefix, endpoints in (
                ("/scenario/majority", [leader.endpoint]),
                # Each of these clients starts on the member that is about to fail.
                ("/scenario/paused", [paused.endpoint, leader.endpoint]),
                ("/scenario/cut-off", [cut_off.endpoint, leader.endpoint]),
            )
        }
        writer, on_paused, on_cut_off = writers.values()
        # Every client holds an established connection to its member before the faults.
        for each in (writer, on_paused, on_cut_off):
            each.write_until(5, WRITE_TIMEOUT_SECONDS)
        assert on_paused.where() == paused.endpoint
        assert on_cut_off.where() == cut_off.endpoint

        def ride_out(label: str, fault: Callable[[Member], None], member: Member, on_member: Writer) -> None:
            fault_at = time.monotonic()
            fault(member)
            on_member.write_until(10, WRITE_TIMEOUT_SECONDS)
            writer.write_until(10, WRITE_TIMEOUT_SECONDS)
            timings.add(scenario, f"{label} member's client moved on after", on_member.outage_after(fault_at))
            assert on_member.where() == leader.endpoint

        # A paused member accepts connections but never answers: its clients wait one deadline, then move.
        ride_out("paused", etcd_cluster.pause, paused, on_paused)
        etcd_cluster.unpause(paused)
        ride_out("cut-off", etcd_cluster.disconnect, cut_off, on_cut_off)

        # Both faults at once leave no majority: writes must fail within their deadline, not hang.
        etcd_cluster.pause(paused)
        try:
            failed_before = writer.failures()
            for _ in range(3):
                assert not writer.write(), "a write succeeded without a majority"
            assert writer.failures() == failed_before + 3
        finally:
            etcd_cluster.unpause(paused)

        with timings.measure(scenario, "healed, members converged"):
            etcd_cluster.reconnect(cut_off)
            writer.write_until(10, WRITE_TIMEOUT_SECONDS)
            etcd_cluster.wait_healthy()
            etcd_cluster.wait_converged()
        for prefix, each in writers.items():
            assert_all_acknowledged_on(each, prefix, etcd_cluster.members)
            assert_no_hang(each)


def test_whole_cluster_restart_keeps_data_and_watch_resumes(
    etcd_cluster: EtcdCluster, timings: Timings
) -> None:
    scenario = "all of etcd restarted"
    kv = etcd_cluster.kv()
    writer = key_writer(kv, "/scenario/restart")
    with contextlib.closing(kv):
        writer.write_until(30, WRITE_TIMEOUT_SECONDS)
        before = etcd_cluster.wait_converged()
        with timings.measure(scenario, "stop all, start all, quorum back"):
            etcd_cluster.restart_all()
        assert etcd_cluster.wait_converged() >= before
        writer.write_until(10, WRITE_TIMEOUT_SECONDS)
        assert_all_acknowledged_on(writer, "/scenario/restart", etcd_cluster.members)
        assert_no_hang(writer)

    # A watcher that had seen everything up to ``before`` resumes from there: no compaction, no gap,
    # exactly the writes made after the restart.
    seen = watch_keys(etcd_cluster, etcd_cluster.members[0], "/scenario/restart", before + 1, count=10)
    assert seen == writer.acknowledged[-10:]


def test_cluster_members_see_each_other(etcd_cluster: EtcdCluster) -> None:
    with contextlib.closing(etcd_cluster.members[0].client()) as client:
        names = sorted(m.name for m in client.members)
    assert names == ["etcd-0", "etcd-1", "etcd-2"]
