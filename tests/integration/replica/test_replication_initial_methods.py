"""Initial replication by external media (export, carry, import) and from an existing copy at the DR site."""

from __future__ import annotations

import shutil

import grpc
import pytest

from overland.v1 import replica_pb2, replica_pb2_grpc
from tests.integration.replica.conftest import (
    MiB,
    Sites,
    enable_request,
    make_disk,
    primary_stub,
    qemu_compare,
    qemu_io,
    replica_disk,
    replicate_now,
    state_name,
    wait_for,
)

pytestmark = pytest.mark.qemu


def test_external_media_export_import_then_deltas(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
    qemu_io(str(disk), "write -P 0x21 2M 5M")
    export = sites.base / "media" / "vm1.ovr"
    export.parent.mkdir()
    primary = sites.primary()
    assert primary.nbd is not None
    stub = primary_stub(primary.port)
    stub.EnableReplication(
        enable_request("vm1", {"d0": disk}, sites.dr.endpoint, initial_method=2, export_path=str(export))
    )
    get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))  # noqa: E731
    wait_for(get, lambda r: state_name(r) == "WAITING_TO_COMPLETE_INITIAL_REPLICATION")
    assert export.stat().st_size < 7 * MiB  # sparse-aware: only allocated data travels
    # Written while the media is in transit: must arrive with the first delta.
    qemu_io(f"nbd://127.0.0.1:{primary.nbd.port}/vm1/d0", "write -P 0x22 12M 1M", fmt="raw")
    carried = sites.base / "dr-inbox" / "vm1.ovr"
    carried.parent.mkdir()
    shutil.copyfile(export, carried)
    receiver = replica_pb2_grpc.ReplicaReceiverServiceStub(grpc.insecure_channel(sites.dr.endpoint))
    with pytest.raises(grpc.RpcError) as info:
        receiver.ImportInitialReplica(
            replica_pb2.ImportInitialReplicaRequest(path=str(carried), primary="mallory")
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ack = receiver.ImportInitialReplica(
        replica_pb2.ImportInitialReplicaRequest(path=str(carried), primary="primary"), timeout=60
    )
    assert ack.sequence == 1
    after = replicate_now(stub, "vm1")
    assert state_name(after) == "REPLICATING"
    after = replicate_now(stub, "vm1")
    assert after.last_sequence == 2
    result = qemu_compare(disk, replica_disk(sites, "vm1", "d0"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_existing_copy_ships_only_the_differences(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
    qemu_io(str(disk), "write -P 0x31 0 10M")
    copy = replica_disk(sites, "vm1", "d0")
    copy.parent.mkdir(parents=True)
    shutil.copyfile(disk, copy)
    qemu_io(str(disk), "write -P 0x32 3M 512k")
    primary = sites.primary()
    stub = primary_stub(primary.port)
    stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint, initial_method=3))
    get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))  # noqa: E731
    done = wait_for(get, lambda r: state_name(r) == "REPLICATING")
    assert done.statistics.transferred_bytes == 512 * 1024
    result = qemu_compare(disk, copy)
    assert result.returncode == 0, result.stdout + result.stderr
