"""Failover between two real sites, on disks (no guest boots): a test failover while replication
goes on, a planned failover with reverse and back again without a full copy, an unplanned failover
after the primary site is killed (a point, cancel, another point, complete, reverse), and the bad
input that must change nothing.

The disks are written through the sites' NBD exports (qemu-io), as a VM writes them; what a failover
VM would see is read through its export (qemu-img over NBD) and compared with copies taken at each
cut. The VMs are defined at site A (New-VM) without NICs; the guest boots are in
``tests/integration/vm/test_failover_vm.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2, vm_pb2
from tests.integration.replica.conftest import make_disk, qemu_compare, qemu_io
from tests.integration.replica.failover_sites import MiB, Site, define_and_replicate, failed, raw_of, site

pytestmark = pytest.mark.qemu

VM = "vm1"
SIZE = 16 * MiB


@pytest.fixture
def two_sites(tmp_path: Path) -> Iterator[tuple[Site, Site, Path]]:
    a = site(tmp_path, "site-a", "site-b")
    b = site(tmp_path, "site-b", "site-a")
    a.process.start()
    b.process.start()
    disk = make_disk(tmp_path / "vm1.vhd", SIZE)
    qemu_io(str(disk), "write -P 0x11 0 4M")
    try:
        yield a, b, disk
    finally:
        a.process.stop()
        b.process.stop()


def replicate(a: Site, b: Site, disk: Path) -> None:
    """VM vm1 defined at A on ``disk``, replicated to B with 4 hourly points."""
    define_and_replicate(a, b, VM, disk, points=4)


def write(at: Site, pattern: int, offset: str, length: str = "1M") -> None:
    qemu_io(at.nbd(f"{VM}/d0"), f"write -P {pattern:#x} {offset} {length}", fmt="raw")


def test_a_test_failover_runs_at_a_point_while_replication_goes_on(
    two_sites: tuple[Site, Site, Path],
) -> None:
    a, b, disk = two_sites
    replicate(a, b, disk)
    # The replica VM is there at B, locked.
    replica_vm = b.vm(VM)
    assert replica_vm.replication_mode == vm_pb2.REPLICATION_MODE_REPLICA
    assert "fail it over" in replica_vm.locked_reason
    point1 = raw_of(str(disk), a.state.parent / "point1.raw", "vpc")
    write(a, 0x22, "1M")
    assert a.cycle(VM).last_sequence == 2
    started = b.failover(VM, as_test=True, recovery_point=1, leave_off=True)
    assert (started.state, started.test_vm_name, started.test_recovery_point) == (
        replica_pb2.FAILOVER_STATE_REPLICA,
        f"{VM} - Test",
        1,
    )
    # A second test, and the illegal transitions around it, name the state.
    for call in (
        lambda: b.failover(VM, as_test=True),
        lambda: b.replicas.SetVmReplication(replica_pb2.SetVmReplicationRequest(vm_name=VM, reverse=True)),
        lambda: b.failover(VM, force=True),
    ):
        error = failed(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert "with a test failover running" in str(error.details())
    # The test VM's disk reads as point 1 while deltas keep committing under it.
    write(a, 0x33, "0", "2M")
    assert a.cycle(VM).last_sequence == 3
    test_disk = b.nbd(f"{VM} - Test/d0")
    assert raw_of(test_disk, a.state.parent / "test.raw").read_bytes() == point1.read_bytes()
    # The test VM writes; the replica does not see it.
    qemu_io(test_disk, "write -P 0x77 8M 1M", fmt="raw")
    write(a, 0x44, "8M", "64k")
    assert a.cycle(VM).last_sequence == 4
    assert b.vm(f"{VM} - Test").state == vm_pb2.VM_STATE_OFF
    stopped = b.replicas.StopVmFailover(replica_pb2.StopVmFailoverRequest(vm_name=VM), timeout=60)
    assert not stopped.test_vm_name
    assert failed(lambda: b.vm(f"{VM} - Test")).code() == grpc.StatusCode.NOT_FOUND
    assert not (b.store / VM / "point-disks" / "test").exists()
    compared = qemu_compare(disk, b.store / VM / "disks" / "d0.vhd")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    events = [(e.operation, e.recovery_point) for e in b.history(VM)]
    assert events == [("start test failover", 1), ("stop test failover", 1)]
    assert all(e.who.startswith("ipv4:127.0.0.1:") for e in b.history(VM))


def test_a_planned_failover_reverses_and_fails_back_without_a_full_copy(
    two_sites: tuple[Site, Site, Path],
) -> None:
    a, b, disk = two_sites
    replicate(a, b, disk)
    initial = a.replication(VM).statistics.transferred_bytes
    assert initial >= 4 * MiB
    write(a, 0x22, "2M")
    # Prepare needs the VM off (it is), ships the last changes and locks the VM.
    prepared = a.failover(VM, prepare=True)
    assert prepared.state == replica_pb2.FAILOVER_STATE_PREPARED
    assert 0 < prepared.final_cycle_bytes < 2 * MiB
    assert "prepared for a planned failover" in a.vm(VM).locked_reason
    error = failed(lambda: a.vms.StartVm(vm_pb2.StartVmRequest(name=VM), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "prepared for a planned failover" in str(error.details())
    # At B: the planned failover (the last delta was the prepared one) reverses the replication.
    done = b.failover(VM, leave_off=True)
    assert done.state == replica_pb2.FAILOVER_STATE_PRIMARY
    assert a.status(VM).state == replica_pb2.FAILOVER_STATE_REPLICA
    assert a.vm(VM).replication_mode == vm_pb2.REPLICATION_MODE_REPLICA
    assert b.vm(VM).replication_mode == vm_pb2.REPLICATION_MODE_PRIMARY
    assert not b.vm(VM).locked_reason
    # B writes and replicates to A, whose replica is its own disk: deltas only.
    write(b, 0x55, "3M")
    sent = b.cycle(VM)
    assert sent.statistics.transferred_bytes <= 1 * MiB + 64 * 1024
    compared = qemu_compare(disk, b.store / VM / "disks" / "d0.vhd")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    # And back: prepare at B, fail over at A.
    b.failover(VM, prepare=True)
    back = a.failover(VM, leave_off=True)
    assert back.state == replica_pb2.FAILOVER_STATE_PRIMARY
    assert b.status(VM).state == replica_pb2.FAILOVER_STATE_REPLICA
    write(a, 0x66, "5M")
    assert a.cycle(VM).statistics.transferred_bytes <= 1 * MiB + 64 * 1024
    compared = qemu_compare(disk, b.store / VM / "disks" / "d0.vhd")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    # No full copy after the first: no initial cycle ran at B, and A's is the only one.
    assert "kind=initial" not in b.log()
    assert a.log().count("kind=initial") == 1
    assert a.vm(VM).replication_mode == vm_pb2.REPLICATION_MODE_PRIMARY
    assert [e.operation for e in a.history(VM)] == [
        "prepare planned failover",
        "adopt replica after planned failover",
        "planned failover",
    ]


def test_an_unplanned_failover_after_the_primary_dies(two_sites: tuple[Site, Site, Path]) -> None:
    a, b, disk = two_sites
    replicate(a, b, disk)
    copies = {1: raw_of(str(disk), a.state.parent / "p1.raw", "vpc")}
    for seq, pattern in ((2, 0x22), (3, 0x33)):
        write(a, pattern, f"{seq}M", "2M")
        assert a.cycle(VM).last_sequence == seq
        copies[seq] = raw_of(str(disk), a.state.parent / f"p{seq}.raw", "vpc")
    # While the primary answers, an unplanned failover is refused.
    error = failed(lambda: b.failover(VM, recovery_point=2, leave_off=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "answers" in str(error.details())
    a.process.kill()
    # A point that does not exist: nothing changes.
    error = failed(lambda: b.failover(VM, recovery_point=9, leave_off=True))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert b.status(VM).state == replica_pb2.FAILOVER_STATE_REPLICA
    failed_over = b.failover(VM, recovery_point=2, leave_off=True)
    assert (failed_over.state, failed_over.recovery_point) == (replica_pb2.FAILOVER_STATE_FAILED_OVER, 2)
    export = b.nbd(f"{VM}/d0")
    assert raw_of(export, a.state.parent / "f2.raw").read_bytes() == copies[2].read_bytes()
    error = failed(lambda: b.failover(VM, recovery_point=1, leave_off=True))
    assert "failed over (not completed)" in str(error.details())
    # Cancel: back to the replica, every point still there; then another point.
    b.replicas.StopVmFailover(replica_pb2.StopVmFailoverRequest(vm_name=VM), timeout=60)
    assert b.status(VM).state == replica_pb2.FAILOVER_STATE_REPLICA
    # (Retention keeps the newest point of each hour besides the latest: 1 went when 3 came.)
    points = b.replicas.ListRecoveryPoints(replica_pb2.ListRecoveryPointsRequest(vm_name=VM), timeout=10)
    assert [p.sequence for p in points.recovery_points] == [3, 2]
    b.failover(VM, recovery_point=3, leave_off=True)
    assert raw_of(export, a.state.parent / "f3.raw").read_bytes() == copies[3].read_bytes()
    qemu_io(export, "write -P 0x99 12M 1M", fmt="raw")
    expected = bytearray(copies[3].read_bytes())
    expected[12 * MiB : 13 * MiB] = b"\x99" * MiB
    completed = b.replicas.CompleteVmFailover(replica_pb2.CompleteVmFailoverRequest(vm_name=VM), timeout=60)
    assert completed.state == replica_pb2.FAILOVER_STATE_FAILOVER_COMPLETE
    # The replica is the point with the VM's write (under a running VM its export switches to the
    # replica: tests/unit/replica/test_point_disks.py); the other points went.
    assert raw_of(
        str(b.store / VM / "disks" / "d0.vhd"), a.state.parent / "r.raw", "vpc"
    ).read_bytes() == bytes(expected)
    assert b.vm(VM).config.disks[0].path == str((b.store / VM / "disks" / "d0.vhd").resolve())
    # The old primary comes back; reversing makes it adopt its (diverged) disk, resynchronized.
    qemu_io(str(disk), "write -P 0xaa 14M 1M")
    a.process.start()
    reversed_ = b.replicas.SetVmReplication(
        replica_pb2.SetVmReplicationRequest(vm_name=VM, reverse=True), timeout=60
    )
    assert reversed_.state == replica_pb2.FAILOVER_STATE_PRIMARY
    resynced = b.cycle(VM)
    assert resynced.last_sequence > 3
    assert not resynced.resync_required
    compared = qemu_compare(disk, b.store / VM / "disks" / "d0.vhd")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert [(e.operation, e.recovery_point) for e in b.history(VM)] == [
        ("unplanned failover", 2),
        ("cancel failover", 2),
        ("unplanned failover", 3),
        ("complete failover", 3),
        ("reverse replication", 3),
    ]


def test_bad_input_changes_nothing(two_sites: tuple[Site, Site, Path]) -> None:
    a, b, disk = two_sites
    replicate(a, b, disk)
    error = failed(lambda: b.failover("nosuch", as_test=True))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "neither replicated from this site nor kept here" in str(error.details())
    error = failed(lambda: b.failover(VM, as_test=True, recovery_point=7, leave_off=True))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no recovery point 7" in str(error.details())
    replica = b.store / VM / "disks" / "d0.vhd"
    moved = replica.with_name("elsewhere.vhd")
    shutil.move(replica, moved)
    error = failed(lambda: b.failover(VM, as_test=True, leave_off=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no disk 'd0'" in str(error.details())
    shutil.move(moved, replica)
    assert b.status(VM).state == replica_pb2.FAILOVER_STATE_REPLICA
    assert b.history(VM) == []
    assert not (b.store / VM / "point-disks").exists()
    points = b.replicas.ListRecoveryPoints(replica_pb2.ListRecoveryPointsRequest(vm_name=VM), timeout=10)
    assert [p.sequence for p in points.recovery_points] == [1]
    # Illegal at the primary: a second prepare, a test, a complete.
    a.failover(VM, prepare=True)
    for call, words in (
        (lambda: a.failover(VM, prepare=True), "prepared for a planned failover"),
        (lambda: a.failover(VM, as_test=True), "prepared for a planned failover"),
        (
            lambda: a.replicas.CompleteVmFailover(replica_pb2.CompleteVmFailoverRequest(vm_name=VM)),
            "prepared",
        ),
    ):
        error = failed(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert words in str(error.details())
    # Cancelling the prepare unlocks the VM and replication goes on.
    a.replicas.StopVmFailover(replica_pb2.StopVmFailoverRequest(vm_name=VM), timeout=30)
    assert not a.vm(VM).locked_reason
    write(a, 0x22, "1M")
    # (The scheduler may have run the cycle a cancel makes due first.)
    assert a.cycle(VM).last_sequence >= 3
    compared = qemu_compare(disk, b.store / VM / "disks" / "d0.vhd")
    assert compared.returncode == 0, compared.stdout + compared.stderr
