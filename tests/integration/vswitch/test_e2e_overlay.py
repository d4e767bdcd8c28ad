"""End to end (issue 3): real etcd, the policy service, and a vswitch agent process in each of three
host namespaces (PAs 198.18.0.1-3), VMs in their own namespaces behind the agents' TAP ports.

Two tenants in different routing domains both use 192.0.2.0/24; blue has a second subnet
198.51.100.0/24. Checks: ping inside a tenant across hosts, isolation across tenants even on the same
IP, routing between blue's subnets, a live migration (PA update) that keeps ping working, forwarding
while etcd is unreachable, and an agent restart that loses little traffic (measured and printed).
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from overland.v1 import policy_pb2, vswitch_pb2
from services.common.etcd_process import EtcdProcess
from services.vswitch.demo import PAS, OverlayDemo, record_of
from services.vswitch.lab import Lab, VmSpec
from services.vswitch.netns import exec_argv
from tests.integration.vswitch.overlay import overlay_cluster

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


@dataclass
class Cluster:
    demo: OverlayDemo
    etcd: EtcdProcess

    @property
    def lab(self) -> Lab:
        return self.demo.lab

    @property
    def vms(self) -> dict[str, VmSpec]:
        return self.demo.vms

    def ping(self, vm: str, destination: str, count: int = 2) -> bool:
        return self.demo.ping(vm, destination, count=count)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with overlay_cluster(tmp_path_factory.mktemp("e2e")) as (demo, etcd):
        yield Cluster(demo, etcd)


def neighbour_mac(cluster: Cluster, vm: str, ip: str) -> str:
    return cluster.lab.run(cluster.lab.vms[vm].netns, ["ip", "neigh", "show", ip]).stdout


def test_ping_works_inside_a_tenant_across_hosts(cluster: Cluster) -> None:
    assert cluster.ping("blue1", "192.0.2.12")  # host1 -> host2
    assert cluster.ping("red1", "192.0.2.11")  # host1 -> host3, red's own .11
    assert cluster.vms["red2"].mac in neighbour_mac(cluster, "red1", "192.0.2.11")


def test_tenants_never_meet_even_on_the_same_ip(cluster: Cluster) -> None:
    # red1 (192.0.2.12) shares host1 with blue1; blue1's 192.0.2.12 is blue2 on host2.
    assert cluster.ping("blue1", "192.0.2.12")
    assert cluster.vms["blue2"].mac in neighbour_mac(cluster, "blue1", "192.0.2.12")
    assert cluster.vms["red1"].mac not in neighbour_mac(cluster, "blue1", "192.0.2.12")
    # Red has no route to blue's second subnet.
    assert not cluster.lab.ping(cluster.lab.vms["red1"], "198.51.100.13", count=1, wait=0.5)
    counters = cluster.demo.agent_of(PAS[0]).stub.GetCounters(vswitch_pb2.GetCountersRequest(), timeout=5)
    assert counters.drops["no_route"] >= 1


def test_routing_between_the_subnets_of_one_tenant(cluster: Cluster) -> None:
    assert cluster.ping("blue1", "198.51.100.13")  # host1, subnet A -> host3, subnet B
    reply = cluster.lab.run(
        cluster.lab.vms["blue3"].netns, ["ping", "-n", "-c", "1", "-W", "2", "192.0.2.11"]
    )
    assert "ttl=63" in reply.stdout


def test_forwarding_goes_on_while_etcd_is_unreachable(cluster: Cluster) -> None:
    cluster.etcd.pause()
    try:
        assert cluster.ping("blue1", "192.0.2.12", count=3)
        assert cluster.ping("blue1", "198.51.100.13", count=2)
    finally:
        cluster.etcd.resume()


def test_a_migrated_vm_is_reachable_soon_after_the_pa_update(cluster: Cluster) -> None:
    """blue2 moves from host2 to host3: its new NIC is plugged on host3, then the PA update is written.
    A 20 pps ping from blue1 runs throughout; the first reply after the write says when it took effect."""
    old_pa, new_pa = PAS[1], PAS[2]
    spec = cluster.vms["blue2"]
    cluster.demo.attach("blue2", new_pa, "tap-blue2m")
    cluster.demo.agent_of(old_pa).stub.DetachPort(vswitch_pb2.DetachPortRequest(name="tap-blue2"), timeout=10)
    cluster.demo.configure("blue2", "tap-blue2m")
    pinger = start_pinger(cluster, "blue1", spec.ca, seconds=8)
    try:
        time.sleep(1.0)
        written = time.time()
        update = policy_pb2.UpdateLookupRecordRequest(lookup_record=record_of(spec, new_pa))
        cluster.demo.policy.UpdateLookupRecord(update, timeout=10)
        output, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    after = [t for t in reply_times(output) if t > written]
    assert after, "blue2 never answered at its new host"
    print(f"\nmigration: first reply from the new host {after[0] - written:.3f} s after the PA update")
    assert cluster.ping("blue3", "192.0.2.12")  # routed to its new host too


def start_pinger(cluster: Cluster, vm: str, destination: str, seconds: int) -> subprocess.Popen[str]:
    """A 20 pps ping with reply timestamps (``-D``), for ``seconds``."""
    argv = ["ping", "-n", "-D", "-i", "0.05", "-W", "1", "-w", str(seconds), destination]
    return subprocess.Popen(
        exec_argv(cluster.lab.vms[vm].netns, argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def reply_times(ping_output: str) -> list[float]:
    """The ``-D`` timestamps of the echo replies in ping's output."""
    return [float(line[1 : line.index("]")]) for line in ping_output.splitlines() if "bytes from" in line]


def test_an_agent_restart_loses_little_traffic(cluster: Cluster) -> None:
    agent = cluster.demo.agent_of(PAS[0])
    # Pinged from host3 to blue1 on host1: the pinging VM's own NIC never goes down, so the gap in
    # replies is the restarted host's forwarding outage, not ping backing off from send errors.
    pinger = start_pinger(cluster, "blue3", "192.0.2.11", seconds=14)
    try:
        time.sleep(1.5)
        restarted = time.monotonic()
        agent.stop()
        agent.start()
        agent.wait_applied(cluster.demo.revision())
        restart_seconds = time.monotonic() - restarted
        output, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    times = reply_times(output)
    gap = max(later - earlier for earlier, later in itertools.pairwise(times))
    print(f"\nagent restart: served again after {restart_seconds:.2f} s; longest gap in replies {gap:.2f} s")
    ports = agent.stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=5).ports
    assert {p.name for p in ports} >= {"tap-blue1", "tap-red1"}  # re-opened from the saved list
    assert times[-1] - times[0] > restart_seconds  # replies before and after the restart
    assert cluster.ping("blue1", "198.51.100.13")
    assert cluster.ping("red1", "192.0.2.11")
