"""etcd cluster faults with plain clients: the cluster the services rely on rides them out, and calls
with a deadline never hang.

These scenarios need no Overland service; the service scenarios (test_service_faults.py) repeat the
faults with the policy service and the vswitch agents as the clients.
"""

from __future__ import annotations

import contextlib
import time

import etcd3
from etcd3 import etcdrpc
from etcd3.utils import prefix_range_end

from tests.integration.containers.harness import (
    CLIENT_DEADLINE_SECONDS,
    DEADLINE_SLACK_SECONDS,
    ELECTION_TIMEOUT_MS,
    EtcdCluster,
    FailoverClient,
    Member,
    Timings,
    Writer,
)

# An election takes one to two election timeouts; a client may first spend one deadline on the lost
# member and one on a member that has no leader yet.
RESUME_BOUND_SECONDS = 2 * ELECTION_TIMEOUT_MS / 1000 + 2 * CLIENT_DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS
WRITE_TIMEOUT_SECONDS = 60.0


def assert_no_hang(writer: Writer) -> None:
    longest = writer.longest_call()
    assert longest <= CLIENT_DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS, f"a call hung for {longest:.2f} s"


def assert_all_acknowledged_on(cluster: EtcdCluster, writer: Writer, members: list[Member]) -> None:
    """Every acknowledged write is on every given member's own copy (serializable reads)."""
    for member in members:
        with contextlib.closing(member.client()) as client:
            stored = {meta.key.decode() for _, meta in client.get_prefix(writer.prefix, serializable=True)}
        missing = set(writer.acknowledged) - stored
        assert not missing, (
            f"{member.name} lost {len(missing)} acknowledged writes, e.g. {sorted(missing)[:3]}"
        )
    assert len(writer.acknowledged) == len(set(writer.acknowledged))


def watch_keys(member: Member, prefix: str, start_revision: int, count: int) -> list[str]:
    """The keys of the first ``count`` events of a watch on ``prefix`` from ``start_revision``.

    A raw Watch stream with a deadline: python-etcd3's watch thread cannot be bounded and crashes on close.
    """
    request = etcdrpc.WatchRequest(
        create_request=etcdrpc.WatchCreateRequest(
            key=prefix.encode(), range_end=prefix_range_end(prefix.encode()), start_revision=start_revision
        )
    )
    seen: list[str] = []
    with contextlib.closing(member.client()) as client:
        stream = etcdrpc.WatchStub(client.channel).Watch(iter([request]), timeout=WRITE_TIMEOUT_SECONDS)
        try:
            for response in stream:
                assert not response.compact_revision, "the history the watch resumes from was compacted"
                seen.extend(event.kv.key.decode() for event in response.events)
                if len(seen) >= count:
                    break
        finally:
            stream.cancel()
    return seen


def followers(cluster: EtcdCluster) -> list[Member]:
    leader = cluster.leader()
    return [m for m in cluster.members if m is not leader]


def test_leader_killed_writes_resume_and_members_converge(
    etcd_cluster: EtcdCluster, timings: Timings
) -> None:
    scenario = "etcd leader killed"
    client = FailoverClient(etcd_cluster.endpoints)
    writer = Writer(client, "/scenario/leader")
    try:
        writer.write_until(20, WRITE_TIMEOUT_SECONDS)
        leader = etcd_cluster.leader()
        # Point the client at the leader so the first write after the fault meets the loss head-on.
        client.preferred = etcd_cluster.members.index(leader)
        fault_at = time.monotonic()
        etcd_cluster.kill(leader)
        writer.write_until(20, WRITE_TIMEOUT_SECONDS)
        outage = writer.outage_after(fault_at)
        timings.add(scenario, "writes resumed after", outage)
        survivors = [m for m in etcd_cluster.members if m is not leader]
        new_leader = etcd_cluster.leader(survivors)
        assert new_leader is not leader
        assert outage <= RESUME_BOUND_SECONDS, f"writes resumed only after {outage:.2f} s"
        assert_no_hang(writer)

        with timings.measure(scenario, "old leader rejoined, members converged"):
            etcd_cluster.start_member(leader)
            etcd_cluster.wait_healthy([leader])
            etcd_cluster.wait_converged()
        assert_all_acknowledged_on(etcd_cluster, writer, etcd_cluster.members)
    finally:
        client.close()


def test_paused_and_cut_off_members_majority_keeps_writing(
    etcd_cluster: EtcdCluster, timings: Timings
) -> None:
    scenario = "etcd member paused / cut off"
    paused, cut_off = followers(etcd_cluster)
    client = FailoverClient(etcd_cluster.endpoints)
    writer = Writer(client, "/scenario/partition")
    try:
        writer.write_until(10, WRITE_TIMEOUT_SECONDS)

        # A paused member accepts connections but never answers: its clients wait one deadline, then move.
        client.preferred = etcd_cluster.members.index(paused)
        fault_at = time.monotonic()
        etcd_cluster.pause(paused)
        writer.write_until(20, WRITE_TIMEOUT_SECONDS)
        timings.add(scenario, "paused member's client moved on after", writer.outage_after(fault_at))
        assert writer.client.current != paused.endpoint
        etcd_cluster.unpause(paused)

        client.preferred = etcd_cluster.members.index(cut_off)
        fault_at = time.monotonic()
        etcd_cluster.disconnect(cut_off)
        writer.write_until(20, WRITE_TIMEOUT_SECONDS)
        timings.add(scenario, "cut-off member's client moved on after", writer.outage_after(fault_at))
        assert writer.client.current != cut_off.endpoint

        # Both faults at once leave no majority: calls must fail within their deadline, not hang.
        etcd_cluster.pause(paused)
        failed_before = sum(not r.ok for r in client.records)
        for _ in range(3):
            assert not writer.write(), "a write succeeded without a majority"
        assert sum(not r.ok for r in client.records) == failed_before + 3
        assert_no_hang(writer)

        with timings.measure(scenario, "healed, members converged"):
            etcd_cluster.unpause(paused)
            etcd_cluster.reconnect(cut_off)
            writer.write_until(10, WRITE_TIMEOUT_SECONDS)
            etcd_cluster.wait_healthy()
            etcd_cluster.wait_converged()
        assert_all_acknowledged_on(etcd_cluster, writer, etcd_cluster.members)
        assert_no_hang(writer)
    finally:
        with contextlib.suppress(Exception):
            etcd_cluster.unpause(paused)
        client.close()


def test_whole_cluster_restart_keeps_data_and_watch_resumes(
    etcd_cluster: EtcdCluster, timings: Timings
) -> None:
    scenario = "all of etcd restarted"
    client = FailoverClient(etcd_cluster.endpoints)
    writer = Writer(client, "/scenario/restart")
    try:
        writer.write_until(30, WRITE_TIMEOUT_SECONDS)
        before = etcd_cluster.wait_converged()
        with timings.measure(scenario, "stop all, start all, quorum back"):
            etcd_cluster.restart_all()
        assert etcd_cluster.wait_converged() >= before
        writer.write_until(10, WRITE_TIMEOUT_SECONDS)
        assert_all_acknowledged_on(etcd_cluster, writer, etcd_cluster.members)

        # A watcher that had seen everything up to ``before`` resumes from there: no compaction, no
        # gap, only the writes made after the restart.
        seen = watch_keys(etcd_cluster.members[0], writer.prefix, before + 1, count=10)
        assert seen == writer.acknowledged[-10:]
    finally:
        client.close()


def test_cluster_members_see_each_other(etcd_cluster: EtcdCluster) -> None:
    with contextlib.closing(etcd_cluster.members[0].client()) as client:
        names = sorted(m.name for m in client.members)
    assert names == ["etcd-0", "etcd-1", "etcd-2"]
    assert isinstance(client, etcd3.MultiEndpointEtcd3Client)
