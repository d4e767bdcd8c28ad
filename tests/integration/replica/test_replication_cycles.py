"""Initial and delta replication between a primary and a DR process, checked with qemu-img.

Crash consistency: a writer keeps writing stamped data (write ``i`` fills its range with ``i``) while
cycles run. The replica must equal the primary at ONE instant: replaying writes 1..K on the starting
image, where K is the newest stamp found in the replica, must give exactly the replica.
"""

from __future__ import annotations

import random
import struct
import threading
from pathlib import Path

import pytest

from overland.v1 import replica_pb2
from services.replica.vhd import open_disk
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
SIZE = 16 * MiB
MAX_WRITES = 20000


def read_image(path: Path) -> bytearray:
    device = open_disk(path)
    try:
        return bytearray(device.read(0, device.virtual_size))
    finally:
        device.close()


def test_initial_and_deltas_are_crash_consistent_under_writes(sites: Sites) -> None:
    disk = make_disk(sites.base / "vm1-d0.vhd", SIZE)
    qemu_io(str(disk), "write -P 0xab 0 3M")
    baseline = read_image(disk)
    primary = sites.primary()
    stub = primary_stub(primary.port)
    request = enable_request(
        "vm1",
        {"d0": disk},
        sites.dr.endpoint,
        compression_mode=replica_pb2.COMPRESSION_ZSTD,
        additional_recovery_points=2,
    )
    assert state_name(stub.EnableReplication(request)) == "READY_FOR_INITIAL_REPLICATION"
    get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))  # noqa: E731
    done = wait_for(get, lambda r: state_name(r) == "REPLICATING")
    assert done.last_sequence == 1
    # Sparse-aware: only the 3 MiB written (VHD blocks of 2 MiB -> 4 MiB allocated) went over the wire.
    assert done.statistics.transferred_bytes <= 4 * MiB

    assert primary.manager is not None
    device = primary.manager.device("vm1", "d0")
    writes: list[tuple[int, int, int]] = []
    stop = threading.Event()
    rng = random.Random(1)

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < MAX_WRITES:
            i += 1
            length = rng.choice((4096, 65536, 133120))
            offset = rng.randrange(0, SIZE - length) // 4096 * 4096
            # Logged before it is issued, so the log never lags a write the replica may hold.
            writes.append((i, offset, length))
            device.write(offset, struct.pack(">Q", i) * (length // 8))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for cycle in range(3):
            replication = replicate_now(stub, "vm1")
            assert replication.last_sequence == 2 + cycle
            replica = read_image(replica_disk(sites, "vm1", "d0"))
            stamps = (struct.unpack_from(">Q", replica, o)[0] for o in range(0, SIZE, 4096))
            # Words of the baseline pattern (0xabab...) are not stamps.
            newest = max((s for s in stamps if s <= MAX_WRITES), default=0)
            assert newest <= len(writes)
            model = bytearray(baseline)
            for i, offset, length in writes[:newest]:
                model[offset : offset + length] = struct.pack(">Q", i) * (length // 8)
            # The copy of the primary at the cut, as qemu-img sees it next to the replica.
            copy = sites.base / f"primary-at-cut-{cycle}.raw"
            copy.write_bytes(model)
            result = qemu_compare(copy, replica_disk(sites, "vm1", "d0"), fmt_a="raw")
            assert result.returncode == 0, f"cycle {cycle}: {result.stdout}{result.stderr}"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(writes) > 50
    final = replicate_now(stub, "vm1")
    assert final.health == replica_pb2.REPLICATION_HEALTH_NORMAL, final.health_reasons
    assert final.statistics.total_cycles == 5
    result = qemu_compare(disk, replica_disk(sites, "vm1", "d0"))
    assert result.returncode == 0, result.stdout + result.stderr
    points = stub.ListRecoveryPoints(replica_pb2.ListRecoveryPointsRequest(vm_name="vm1"))
    assert points.recovery_points[0].sequence == 5


def test_writes_through_the_nbd_export_replicate(sites: Sites) -> None:
    disks = {
        "d0": make_disk(sites.base / "vm2-d0.vhd", SIZE),
        "d1": make_disk(sites.base / "vm2-d1.vhd", 8 * MiB),
    }
    primary = sites.primary()
    assert primary.nbd is not None
    stub = primary_stub(primary.port)
    stub.EnableReplication(enable_request("vm2", disks, sites.dr.endpoint))
    get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm2"))  # noqa: E731
    wait_for(get, lambda r: state_name(r) == "REPLICATING")
    nbd = f"nbd://127.0.0.1:{primary.nbd.port}"
    qemu_io(f"{nbd}/vm2/d0", "write -P 0x5c 1M 300k")
    qemu_io(f"{nbd}/vm2/d1", "write -P 0x11 7M 1M")
    pending = get().statistics.pending_bytes
    assert pending >= 1300 * 1024
    after = replicate_now(stub, "vm2")
    assert after.statistics.pending_bytes == 0
    assert after.statistics.average_delta_bytes > 0
    for name, path in disks.items():
        result = qemu_compare(path, replica_disk(sites, "vm2", name))
        assert result.returncode == 0, result.stdout + result.stderr


def test_all_disks_of_a_vm_are_cut_at_one_instant(sites: Sites) -> None:
    """Stamp ``i`` goes to d0, then to d1. One instant means: d1 holds the stamp of d0 or the one before."""
    disks = {
        "d0": make_disk(sites.base / "m-d0.vhd", 8 * MiB),
        "d1": make_disk(sites.base / "m-d1.vhd", 8 * MiB),
    }
    primary = sites.primary()
    assert primary.manager is not None
    stub = primary_stub(primary.port)
    stub.EnableReplication(enable_request("vm3", disks, sites.dr.endpoint))
    get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm3"))  # noqa: E731
    wait_for(get, lambda r: state_name(r) == "REPLICATING")
    devices = {name: primary.manager.device("vm3", name) for name in disks}
    stop = threading.Event()
    stamps: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < MAX_WRITES:
            i += 1
            stamps.append(i)
            for name in ("d0", "d1"):
                devices[name].write(0, struct.pack(">Q", i) * 512)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = []
        for _ in range(4):
            replicate_now(stub, "vm3")
            d0, d1 = (
                struct.unpack_from(">Q", read_image(replica_disk(sites, "vm3", name)))[0]
                for name in ("d0", "d1")
            )
            assert d0 - d1 in (0, 1), f"d0 at stamp {d0}, d1 at stamp {d1}: not one instant"
            seen.append(d0)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert seen[-1] > 0
