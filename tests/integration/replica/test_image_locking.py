"""qemu-compatible image locking with the real qemu: while the primary serves a disk over NBD, qemu-io,
qemu-img (without -U) and a second qemu refuse to write it (and to open it where qemu would), -U still
reads it, and a second Overland open is refused; a disk a qemu writes is refused to Overland."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2
from services.replica.server import ReplicaServer
from services.replica.vhd import DiskLocked, open_disk
from tests.integration.replica.conftest import (
    MiB,
    Sites,
    enable_request,
    make_disk,
    primary_stub,
    qemu_io,
)

pytestmark = pytest.mark.qemu
SIZE = 16 * MiB


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def refused(done: subprocess.CompletedProcess[str], lock: str) -> None:
    assert done.returncode != 0, done.stdout
    assert f"Failed to get {lock} lock" in done.stderr, done.stderr


@pytest.fixture
def served(sites: Sites) -> Iterator[tuple[Path, ReplicaServer]]:
    """A qemu-made VHD that the primary serves over NBD (replication enabled on it)."""
    disk = make_disk(sites.base / "vm1-d0.vhd", SIZE)
    qemu_io(str(disk), "write -P 0x5a 0 1M")
    primary = sites.primary()
    stub = primary_stub(primary.port)
    stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint))
    yield disk, primary
    stub.DisableReplication(replica_pb2.DisableReplicationRequest(vm_name="vm1"))


def test_qemu_tools_refuse_a_served_disk_and_read_it_with_force_share(
    served: tuple[Path, ReplicaServer],
) -> None:
    disk, primary = served
    refused(run("qemu-io", "-f", "vpc", "-c", "write -P 0x01 0 4k", str(disk)), '"write"')
    # Read-only without -U wants nobody else writing: qemu refuses it against a running VM, and here.
    refused(run("qemu-io", "-r", "-f", "vpc", "-c", "read 0 4k", str(disk)), 'shared "write"')
    refused(run("qemu-img", "info", str(disk)), 'shared "write"')
    info = run("qemu-img", "info", "-U", "--output=json", str(disk))
    assert info.returncode == 0, info.stderr
    assert f'"virtual-size": {SIZE}' in info.stdout
    # -U reads the file while the export serves it: the same bytes as the export.
    assert primary.nbd is not None
    export = f"nbd://127.0.0.1:{primary.nbd.port}/vm1/d0"
    same = run("qemu-img", "compare", "-U", "-f", "vpc", "-F", "raw", str(disk), export)
    assert same.returncode == 0, same.stdout + same.stderr
    # The writes went nowhere: the export still reads what was there.
    qemu_io(export, "read -P 0x5a 0 1M", fmt="raw")


@pytest.mark.parametrize("readonly", [False, True])
def test_a_second_qemu_refuses_a_served_disk(
    readonly: bool, served: tuple[Path, ReplicaServer], tmp_path: Path
) -> None:
    disk, _primary = served
    drive = f"file={disk},format=vpc,if=virtio" + (",readonly=on" if readonly else "")
    done = subprocess.run(
        ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-S", "-drive", drive, "-monitor", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    refused(done, 'shared "write"' if readonly else '"write"')


def test_overland_refuses_a_second_open_of_a_served_disk(
    served: tuple[Path, ReplicaServer], sites: Sites
) -> None:
    disk, _primary = served
    with pytest.raises(DiskLocked, match=str(disk)):
        open_disk(disk, writable=True)
    # Another primary (its own state, the same file) is refused with the file named.
    other = sites.primary(state_dir=sites.base / "other-state")
    with pytest.raises(grpc.RpcError) as error:
        primary_stub(other.port).EnableReplication(enable_request("vm2", {"d0": disk}, sites.dr.endpoint))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(disk) in (error.value.details() or "")


def test_a_disk_a_qemu_writes_is_refused_until_the_qemu_exits(sites: Sites) -> None:
    disk = make_disk(sites.base / "vm1-d0.vhd", SIZE)
    # qemu-io prints the read's result once the image is open, so its locks are held from then on.
    qemu = subprocess.Popen(
        ["stdbuf", "-oL", "qemu-io", "-f", "vpc", "-c", "read 0 512", "-c", "sleep 600000", str(disk)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stub = primary_stub(sites.primary().port)
    try:
        assert qemu.stdout is not None
        assert "read 512/512 bytes" in qemu.stdout.readline()
        with pytest.raises(grpc.RpcError) as error:
            stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint))
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = error.value.details() or ""
        assert str(disk) in details
        assert "in use" in details
    finally:
        qemu.kill()
        qemu.wait(timeout=30)
    done = stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint))
    assert done.vm.name == "vm1"
    stub.DisableReplication(replica_pb2.DisableReplicationRequest(vm_name="vm1"))


def test_disable_releases_the_locks(sites: Sites) -> None:
    disk = make_disk(sites.base / "vm1-d0.vhd", SIZE)
    stub = primary_stub(sites.primary().port)
    stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint))
    refused(run("qemu-img", "info", str(disk)), 'shared "write"')
    stub.DisableReplication(replica_pb2.DisableReplicationRequest(vm_name="vm1"))
    qemu_io(str(disk), "write -P 0x01 0 4k")
