"""SIGKILL of a DR site while a delta commits under a test failover's point disk: between the copy of
the old bytes into the point disk and the journal rename, and again in the middle of the redo. Each
time the restarted site serves the point disk (over its NBD export) exactly as the recovery point it
was made at, and in the end the replica equals the primary's disk."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2
from tests.integration.replica.conftest import make_disk, qemu_compare, qemu_io
from tests.integration.replica.failover_sites import MiB, define_and_replicate, raw_of, site

pytestmark = pytest.mark.qemu

VM = "vm1"


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_kill_between_the_copy_and_the_redo_leaves_the_point_disk_correct(tmp_path: Path) -> None:
    a = site(tmp_path, "site-a", "site-b")
    b = site(tmp_path, "site-b", "site-a", "--fault-apply-delay", "0.2")
    a.process.start()
    b.process.start()
    try:
        disk = make_disk(tmp_path / "vm1.vhd", 16 * MiB)
        qemu_io(str(disk), "write -P 0x11 0 8M")
        define_and_replicate(a, b, VM, disk)
        point = raw_of(str(disk), tmp_path / "point.raw", "vpc").read_bytes()
        # No hourly points are kept: the point disk alone makes the commit read the old bytes.
        b.failover(VM, as_test=True, leave_off=True)
        child = b.store / VM / "point-disks" / "test" / "d0.vhd"
        size = child.stat().st_size
        qemu_io(a.nbd(f"{VM}/d0"), "write -P 0x22 0 8M", fmt="raw")
        outcome: list[object] = []

        def cycle() -> None:
            try:
                outcome.append(a.cycle(VM))
            except grpc.RpcError as error:
                outcome.append(error)

        thread = threading.Thread(target=cycle)
        thread.start()
        # Killed while the commit copies old bytes into the point disk, before the rename.
        wait_for(lambda: child.stat().st_size > size, "the copy into the point disk")
        b.process.kill()
        assert not (b.store / VM / "journal").exists()
        b.process.start()
        test_disk = b.nbd(f"{VM} - Test/d0")
        assert raw_of(test_disk, tmp_path / "t1.raw").read_bytes() == point
        # The primary resends; killed this time in the middle of the redo.
        wait_for((b.store / VM / "journal").exists, "the commit's rename")
        b.process.kill()
        b.process.start()
        thread.join(timeout=120)
        assert raw_of(test_disk, tmp_path / "t2.raw").read_bytes() == point
        assert len(outcome) == 1
        assert isinstance(outcome[0], replica_pb2.Replication), outcome[0]
        assert outcome[0].last_sequence == 2
        compared = qemu_compare(disk, b.store / VM / "disks" / "d0.vhd")
        assert compared.returncode == 0, compared.stdout + compared.stderr
        assert b.status(VM).test_vm_name == f"{VM} - Test"
    finally:
        a.process.stop()
        b.process.stop()
