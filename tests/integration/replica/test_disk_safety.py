"""No data lost by an operator's mistake: a disk file belongs to one VM (by device and inode, across
restarts), and a disk file written outside the export — while the site runs, or while it is down —
is resynchronized by the next cycle, with health saying why meanwhile. Real sites, real VHDs made
by qemu-img, real outside writers (dd)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2, vm_pb2, vm_pb2_grpc
from services.replica.server import ReplicaServer
from tests.integration.replica.conftest import (
    MiB,
    Sites,
    assert_same,
    enable_request,
    follow_cycle,
    make_disk,
    primary_stub,
    replica_disk,
    state_name,
    wait_for,
)

pytestmark = pytest.mark.qemu


def dd(disk: Path, offset_mib: int, count_mib: int = 1) -> None:
    """Another program writes the disk file: random bytes into a fixed VHD's data, in place."""
    subprocess.run(
        [
            "dd",
            "if=/dev/urandom",
            f"of={disk}",
            "bs=1M",
            f"seek={offset_mib}",
            f"count={count_mib}",
            "conv=notrunc",
            "status=none",
        ],
        check=True,
        timeout=30,
    )


def enabled(primary: ReplicaServer, vm: str, disk: Path, endpoint: str) -> replica_pb2.Replication:
    stub = primary_stub(primary.port)
    stub.EnableReplication(enable_request(vm, {"d0": disk}, endpoint), timeout=30)
    return wait_for(lambda: get(primary, vm), lambda r: state_name(r) == "REPLICATING")


def get(primary: ReplicaServer, vm: str) -> replica_pb2.Replication:
    return primary_stub(primary.port).GetReplication(
        replica_pb2.GetReplicationRequest(vm_name=vm), timeout=10
    )


def cycle_now(primary: ReplicaServer, vm: str) -> replica_pb2.Cycle:
    stub = primary_stub(primary.port)
    ended = follow_cycle(stub, stub.ReplicateNow(replica_pb2.ReplicateNowRequest(vm_name=vm), timeout=10))
    assert ended.state == replica_pb2.CYCLE_STATE_SUCCEEDED, ended
    return ended


def restart(sites: Sites, primary: ReplicaServer) -> ReplicaServer:
    primary.stop()
    sites.primaries.remove(primary)
    return sites.primary()


def test_a_disk_file_belongs_to_one_vm_by_any_path_and_across_restarts(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 4 * MiB)
    hard = sites.base / "hard-link.vhd"
    hard.hardlink_to(disk)
    soft = sites.base / "symlink.vhd"
    soft.symlink_to(disk)
    primary = sites.primary()
    enabled(primary, "vm1", disk, sites.dr.endpoint)
    for attempt in range(2):
        stub = primary_stub(primary.port)
        for path in (disk, hard, soft):
            with pytest.raises(grpc.RpcError) as refused:
                stub.EnableReplication(enable_request("vm2", {"d0": path}, sites.dr.endpoint), timeout=30)
            assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "is disk 'd0' of VM 'vm1'" in (refused.value.details() or "")
        # A VM defined at the site cannot take it either.
        vms = vm_pb2_grpc.VmServiceStub(grpc.insecure_channel(f"127.0.0.1:{primary.port}"))
        with pytest.raises(grpc.RpcError) as refused:
            vms.CreateVm(
                vm_pb2.CreateVmRequest(
                    vm=replica_pb2.VirtualMachine(
                        name="vm3", disks=[replica_pb2.VmDisk(name="os", path=str(hard))]
                    )
                ),
                timeout=30,
            )
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "VM 'vm1'" in (refused.value.details() or "")
        if attempt == 0:
            # The ownership is the same after a restart.
            primary = restart(sites, primary)
    # Disabled, the file is free again.
    primary_stub(primary.port).DisableReplication(
        replica_pb2.DisableReplicationRequest(vm_name="vm1"), timeout=30
    )
    primary_stub(primary.port).EnableReplication(
        enable_request("vm2", {"d0": soft}, sites.dr.endpoint), timeout=30
    )


def test_a_write_outside_the_export_while_the_site_runs_is_resynced(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB, fmt="fixed")
    dd(disk, 0, 2)
    primary = sites.primary()
    enabled(primary, "vm1", disk, sites.dr.endpoint)
    dd(disk, 5)
    # Health says so before any cycle ran: never NORMAL while the DR copy is behind in a way the
    # tracking log does not know.
    flagged = wait_for(lambda: get(primary, "vm1"), lambda r: bool(r.resync_required))
    assert flagged.health != replica_pb2.REPLICATION_HEALTH_NORMAL
    (reason,) = [r for r in flagged.health_reasons if "resynchronization required" in r]
    assert "written outside the export by pid" in reason
    assert "(dd)" in reason or "pid" in reason
    ended = cycle_now(primary, "vm1")
    assert ended.kind == replica_pb2.CYCLE_KIND_RESYNC
    assert_same(disk, replica_disk(sites, "vm1", "d0"))
    after = get(primary, "vm1")
    assert not after.resync_required
    assert after.health == replica_pb2.REPLICATION_HEALTH_NORMAL, after.health_reasons
    # The site's own writes (through the export) are no outside writes.
    assert primary.manager is not None
    primary_device = primary.manager.device("vm1", "d0")
    primary_device.write(MiB, b"\x42" * 65536)
    assert cycle_now(primary, "vm1").kind == replica_pb2.CYCLE_KIND_DELTA
    assert_same(disk, replica_disk(sites, "vm1", "d0"))


def test_a_change_while_the_site_is_down_is_resynced_and_no_change_is_not(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB, fmt="fixed")
    dd(disk, 0, 2)
    primary = sites.primary()
    enabled(primary, "vm1", disk, sites.dr.endpoint)
    # Stopped and started with nothing changed: deltas go on, no resync.
    primary = restart(sites, primary)
    quiet = get(primary, "vm1")
    assert not quiet.resync_required
    assert cycle_now(primary, "vm1").kind == replica_pb2.CYCLE_KIND_DELTA
    # Written while the site is down.
    primary.stop()
    sites.primaries.remove(primary)
    dd(disk, 6)
    primary = sites.primary()
    flagged = get(primary, "vm1")
    assert flagged.resync_required == ["d0"]
    assert flagged.health != replica_pb2.REPLICATION_HEALTH_NORMAL
    assert any("changed while the site was down" in r for r in flagged.health_reasons), flagged.health_reasons
    assert cycle_now(primary, "vm1").kind == replica_pb2.CYCLE_KIND_RESYNC
    assert_same(disk, replica_disk(sites, "vm1", "d0"))
