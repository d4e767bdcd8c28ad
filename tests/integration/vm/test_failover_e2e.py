"""The end-to-end proof of issue 11: a tenant's VM fails over to the DR site after its primary site
dies, and its tenant network follows it.

Three hosts on one underlay: etcd, the policy service, a vswitch agent process per host namespace
(PAs 198.18.0.1-3) and the demo tenancy, whose tenants blue and red both use 192.0.2.0/24. Host 1 is
the primary site A, host 3 the DR site B, host 2 a third host whose site C runs another VM of blue.
Every site is a real ``python -m services.replica`` process whose VMs are qemu guests in its host's
namespace, on TAP_KERNEL ports of that host's agent, their disks served by the site's NBD export.

1. blue1 (192.0.2.11, VSID 5001) boots at A from its replicated disk; blue2 (192.0.2.12), a guest at
   C, pings it (its disk lists blue1 for the guest's probe) and says so on its console, read through
   the VM API. Red has the same CAs on VSID 6001: red1 (.12) beside blue1 on host 1, red2 (.11) on
   host 3, namespaces behind TAP ports.
2. blue1's workload writes, three cycles replicate to B (each followed to its end), then A dies:
   ``kill -9`` of its qemu and of its site process.
3. B cannot reach A, so its unplanned failover (no force) starts blue1 at the latest recovery point.
4. That point (B's replica disk, under the VM's point disk) checks clean once its journal is replayed
   and holds every record the workload acknowledged before the last cycle began.
5. blue2's probe is answered again, now by blue1 at host 3: a capture on host 3's PA link shows the
   NVGRE requests and replies with blue's VSID, and red's endpoints received no frame at all (their
   interfaces' counters), though red1 reaches red2 at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2, vm_pb2
from services.replica.vm import (
    NETWORK_UP,
    PROBE_CONF,
    Accel,
    lost_records,
    make_vm_disk,
    probe_replies,
    synced_records,
)
from services.vswitch import netns
from services.vswitch.demo import PAS, OverlayDemo
from services.vswitch.lab import BLUE_A, VmSpec
from tests.integration.replica.failover_sites import Site, define_and_replicate, raw_of, site, wait_until
from tests.integration.vm.conftest import BOOT_TIMEOUT, DISK_SIZE, GuestImage, records_after_crash
from tests.integration.vswitch.overlay import nvgre_capture, overlay_cluster, tshark_fields

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.etcd]

PA1, PA2, PA3 = PAS
# The replicated VM and the one that pings it: the demo's blue1 and blue2, run as qemu guests.
VM, PINGER = "blue1", "blue2"
RED = ("red1", "red2")
CYCLES = 3


@dataclass
class World:
    base: Path
    demo: OverlayDemo
    a: Site
    b: Site
    c: Site
    disk: Path
    pinger_disk: Path

    def sites_and_vms(self) -> tuple[tuple[Site, str], ...]:
        return ((self.a, VM), (self.b, VM), (self.c, PINGER))


def host_site(base: Path, name: str, other: str, demo: OverlayDemo, pa: str, *runtime: str) -> Site:
    """A site on host ``pa``: its VMs run in the host's namespace on its agent's ports, and it moves
    records to that host (registered by its agent under the namespace's name)."""
    agent = demo.agent_of(pa)
    return site(
        base,
        name,
        other,
        *runtime,
        *("--vm-netns", agent.host.netns, "--vswitch-endpoint", f"127.0.0.1:{agent.relay.port}"),
        *("--host-name", agent.host.netns, "--policy-endpoint", demo.policy_endpoint),
    )


def probing_disk(guest_image: GuestImage, path: Path, target: str) -> Path:
    """A guest disk whose probe pings ``target`` (the file is on the disk, as the guest's own setting)."""
    template = path.with_name(f"{path.stem}-root")
    shutil.copytree(guest_image.rootfs, template, symlinks=True)
    (template / PROBE_CONF.lstrip("/")).write_text(f"{target}\n")
    return make_vm_disk(template, path, DISK_SIZE)


@pytest.fixture
def world(guest_image: GuestImage, accel: Accel, tmp_path: Path) -> Iterator[World]:
    runtime = ("--guest-image", str(guest_image.kernel.parent), "--accel", accel.value)
    disk = make_vm_disk(guest_image.rootfs, tmp_path / "blue1.vhd", DISK_SIZE)
    with overlay_cluster(tmp_path / "overlay", external_vms=frozenset({VM, PINGER})) as (demo, _etcd):
        pinger_disk = probing_disk(guest_image, tmp_path / "blue2.vhd", demo.vms[VM].ca)
        a = host_site(tmp_path, "site-a", "site-b", demo, PA1, *runtime)
        b = host_site(tmp_path, "site-b", "site-a", demo, PA3, *runtime)
        c = host_site(tmp_path, "site-c", "site-a", demo, PA2, *runtime)
        world = World(tmp_path, demo, a, b, c, disk, pinger_disk)
        for each in (a, b, c):
            each.process.start()
        try:
            yield world
        finally:
            # A site leaves its VMs running when it stops: turn them off, so no qemu outlives the test.
            for at, name in world.sites_and_vms():
                try:
                    if at.vm(name).state != vm_pb2.VM_STATE_OFF:
                        at.vms.StopVm(vm_pb2.StopVmRequest(name=name, turn_off=True), timeout=30)
                except grpc.RpcError:
                    pass  # not defined there, or the site is dead (its qemu was killed with it)
            for each in (a, b, c):
                each.process.stop()


def nic_of(spec: VmSpec) -> replica_pb2.VmNic:
    """The demo VM's NIC: its MAC and VSID, and its CA, which it keeps at the DR site."""
    return replica_pb2.VmNic(
        mac=spec.mac, vsid=spec.vsid, ca=spec.ca, addresses=[spec.cidr], gateway=spec.gateway
    )


def received_frames(demo: OverlayDemo, vm: str) -> int:
    """The frames a namespace VM's interface received (its switch port delivered), by the kernel."""
    shown = netns.ip("-s", "-j", "link", "show", "dev", f"tap-{vm}", netns=demo.lab.vms[vm].netns).stdout
    (link,) = json.loads(shown)
    return int(link["stats64"]["rx"]["packets"])


def probe_answered(at: Site, target: str, after: int, count: int) -> None:
    """Until the pinger's probe has had ``count`` answers from ``target`` past console character
    ``after``."""
    wait_until(
        lambda: probe_replies(at.console(PINGER)[after:]).get(target, 0) >= count,
        f"{count} answers from {target} on {PINGER}'s console",
        BOOT_TIMEOUT,
    )


def dead(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_the_vm_fails_over_to_the_dr_site_and_its_network_follows(world: World) -> None:
    a, b, c, demo = world.a, world.b, world.c, world.demo
    blue1, blue2 = demo.vms[VM], demo.vms[PINGER]
    red_before = {vm: received_frames(demo, vm) for vm in RED}

    # 1. blue1 boots at A from its replicated disk; blue2 at C pings it from its guest.
    define_and_replicate(a, b, VM, world.disk, nics=(nic_of(blue1),), points=1)
    c.vms.CreateVm(
        vm_pb2.CreateVmRequest(
            vm=replica_pb2.VirtualMachine(
                name=PINGER,
                disks=[replica_pb2.VmDisk(name="d0", path=str(world.pinger_disk))],
                nics=[nic_of(blue2)],
            )
        ),
        timeout=10,
    )
    a.vms.StartVm(vm_pb2.StartVmRequest(name=VM), timeout=60)
    c.vms.StartVm(vm_pb2.StartVmRequest(name=PINGER), timeout=60)
    a.wait_console(VM, NETWORK_UP)
    probe_answered(c, blue1.ca, 0, 2)

    # 2. The workload writes, cycles replicate, then site A dies with its VM.
    wait_until(lambda: synced_records(a.console(VM)).get(1, 0) >= 3, "blue1's first records")
    for _ in range(CYCLES):
        # What the workload acknowledged before the cycle began is before the point's cut.
        acknowledged = synced_records(a.console(VM))
        replication = a.cycle(VM)
    point = replication.last_sequence
    assert point == 1 + CYCLES
    qemu = a.vm(VM).pid
    os.kill(qemu, signal.SIGKILL)
    a.process.kill()
    wait_until(lambda: dead(qemu), "site A's qemu to die")

    # 3. B cannot reach A: an unplanned failover, not forced, at the latest point.
    pinger_mark = len(c.console(PINGER))
    with nvgre_capture(demo.agent_of(PA3).host.netns, world.base / "pa3.pcap"):
        failover = b.failover(VM)
        assert failover.state == replica_pb2.FAILOVER_STATE_FAILED_OVER
        assert list(failover.warnings) == []
        assert failover.recovery_point == point
        assert list(failover.moved_records) == [f"{BLUE_A}/{blue1.ca}"]
        assert b.vm(VM).state == vm_pb2.VM_STATE_RUNNING

        # 4. The point it runs at checks clean after journal replay and holds every acknowledged write.
        copy = raw_of(str(b.store / VM / "disks" / "d0.vhd"), world.base / "point.raw", "vpc")
        records = records_after_crash(copy)
        assert acknowledged.get(1, 0) >= 3
        assert lost_records(records, acknowledged) == []

        # 5. The guest came up at B from that disk, and blue2's pings reach it there.
        b.wait_console(VM, "workload boot=2 seq=1 synced")
        probe_answered(c, blue1.ca, pinger_mark, 3)
    rows = tshark_fields(world.base / "pa3.pcap", ["gre.key", "gre.proto", "ip.src", "ip.dst", "icmp.type"])
    # Outer then inner addresses: host 2 -> host 3 carrying blue2 -> blue1, and blue1's replies back.
    requests = [r for r in rows if r["icmp.type"] == "8" and r["ip.src"] == f"{PA2};{blue2.ca}"]
    replies = [r for r in rows if r["icmp.type"] == "0" and r["ip.src"] == f"{PA3};{blue1.ca}"]
    assert requests, rows
    assert replies, rows
    assert {r["ip.dst"] for r in requests} == {f"{PA3};{blue1.ca}"}
    assert {r["ip.dst"] for r in replies} == {f"{PA2};{blue2.ca}"}
    for row in requests + replies:
        assert int(row["gre.key"], 16) >> 8 == BLUE_A
        assert int(row["gre.proto"], 16) == 0x6558
    # Red's endpoints with blue's CAs (red2 .11 on host 3, red1 .12 on host 1) never got a frame...
    assert {vm: received_frames(demo, vm) for vm in RED} == red_before
    # ... though they are reachable: red1 pings red2 at the CA blue1 has.
    assert demo.ping("red1", blue1.ca, count=1, wait=5)
    assert received_frames(demo, "red2") > red_before["red2"]
    assert [e.operation for e in b.history(VM)][-1] == "unplanned failover"
