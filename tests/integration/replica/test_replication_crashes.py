"""SIGKILL at the worst moments: the DR site mid-staging and mid-apply, the primary mid-cycle.

Nothing may be lost: the last committed recovery point stays intact, the transfer resumes (or the
primary resynchronizes), and in the end the replica equals the primary disk (qemu-img compare).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time

import grpc
import pytest

from overland.v1 import replica_pb2
from tests.integration.replica.conftest import (
    CycleFailed,
    MiB,
    ServiceProcess,
    Sites,
    assert_same,
    enable_request,
    free_port,
    make_disk,
    primary_stub,
    qemu_io,
    replica_disk,
    replicate_now,
    state_name,
    throttled,
    wait_for,
)
from tests.integration.replica.test_replication_faults import StreamTap, tapped_factory

pytestmark = pytest.mark.qemu


def wait_path(check: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting for the DR site to reach the crash point"
        time.sleep(0.02)


def test_dr_killed_mid_staging_and_mid_apply(sites: Sites) -> None:
    sites.dr.stop()
    sites.dr.args += ["--fault-apply-delay", "0.25"]
    sites.dr.start()
    disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
    qemu_io(str(disk), "write -P 0x01 0 8M")
    tap = StreamTap()
    primary = sites.primary()
    assert primary.manager is not None
    assert primary.nbd is not None
    primary.manager._channel_factory = tapped_factory(tap)
    stub = primary_stub(primary.port)
    stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint, **throttled(3 * MiB)))
    get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))  # noqa: E731
    wait_for(get, lambda r: state_name(r) == "REPLICATING")
    point1 = sites.base / "point1.vhd"
    shutil.copyfile(disk, point1)
    qemu_io(f"nbd://127.0.0.1:{primary.nbd.port}/vm1/d0", "write -P 0x02 0 8M", fmt="raw")

    outcome: list[object] = []

    def cycle() -> None:
        try:
            outcome.append(replicate_now(stub, "vm1"))
        except (grpc.RpcError, CycleFailed) as error:
            outcome.append(error)

    thread = threading.Thread(target=cycle)
    thread.start()
    vm_dir = sites.dr_store / "vm1"
    log = vm_dir / "staging" / "chunks.log"
    wait_path(lambda: log.exists() and log.stat().st_size > 2 * MiB)
    sites.dr.kill()
    # Killed mid-staging: the replica is still exactly recovery point 1.
    assert_same(point1, replica_disk(sites, "vm1", "d0"))
    sites.dr.start()
    wait_path((vm_dir / "journal").exists)
    sites.dr.kill()
    sites.dr.start()
    thread.join(timeout=120)
    assert len(outcome) == 1
    assert isinstance(outcome[0], replica_pb2.Replication), outcome[0]
    assert outcome[0].last_sequence == 2
    # The retry after the first kill resumed after the chunks the DR site had staged.
    assert max(h.resume_from for h in tap.headers) > 0, [h.resume_from for h in tap.headers]
    assert_same(disk, replica_disk(sites, "vm1", "d0"))
    assert not (vm_dir / "journal").exists()


def test_primary_killed_mid_cycle_then_resyncs(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
    qemu_io(str(disk), "write -P 0x01 0 12M")
    primary = ServiceProcess(
        ["--site-name", "primary", "--state-dir", str(sites.base / "pstate"), "--tick", "0.2"],
        free_port(),
        sites.base / "primary.log",
    ).start()
    try:
        stub = primary_stub(primary.port)
        get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))  # noqa: E731
        stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint, **throttled(4 * MiB)))
        # Killed in the middle of the initial replication.
        wait_for(get, lambda r: r.statistics.transferred_bytes >= 2 * MiB, seconds=30)
        primary.kill()
        qemu_io(str(disk), "write -P 0x07 5M 1M")  # changed outside the export while the primary was down
        primary.start()
        done = wait_for(get, lambda r: state_name(r) == "REPLICATING", seconds=60)
        assert done.last_sequence == 1
        assert_same(disk, replica_disk(sites, "vm1", "d0"))

        # Killed in the middle of a delta cycle.
        qemu_io(f"nbd://127.0.0.1:{primary.nbd_port}/vm1/d0", "write -P 0x09 0 8M", fmt="raw")
        threading.Thread(
            target=lambda: _quietly(lambda: replicate_now(stub, "vm1")),
            daemon=True,
        ).start()
        wait_for(
            get, lambda r: r.statistics.transferred_bytes >= 1 * MiB and r.statistics.progress < 1, seconds=30
        )
        primary.kill()
        qemu_io(str(disk), "write -P 0x0b 14M 64k")
        primary.start()
        # The tracking log was not closed cleanly: the primary resynchronizes by block hash compare.
        resynced = wait_for(
            get, lambda r: state_name(r) == "REPLICATING" and r.last_sequence >= 2 and not r.resync_required
        )
        assert resynced.statistics.transferred_bytes < 16 * MiB
        assert "cycle committed vm=vm1 kind=resync" in (sites.base / "primary.log").read_text()
        assert_same(disk, replica_disk(sites, "vm1", "d0"))
    finally:
        primary.stop()


def _quietly(call: object) -> None:
    """The cycle dies with the primary; its outcome is judged from the DR site, not from this call."""
    with contextlib.suppress(grpc.RpcError):
        call()  # type: ignore[operator]


def test_primary_stopped_gracefully_mid_transfer_resumes_after_restart(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
    qemu_io(str(disk), "write -P 0x0c 0 12M")
    primary = sites.primary()
    stub = primary_stub(primary.port)
    stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint, **throttled(2 * MiB)))
    get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))  # noqa: E731
    wait_for(get, lambda r: r.statistics.transferred_bytes >= 2 * MiB, seconds=30)
    # Stop does not wait for the whole transfer, and a shutdown is not recorded as a failure.
    primary.stop()
    sites.primaries.remove(primary)
    restarted = sites.primary()
    stub = primary_stub(restarted.port)
    status = stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))
    assert state_name(status) != "CRITICAL"
    done = wait_for(
        lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1")),
        lambda r: state_name(r) == "REPLICATING",
        seconds=60,
    )
    assert done.last_sequence == 1
    assert_same(disk, replica_disk(sites, "vm1", "d0"))
