"""The site's disk owner: each file opened once and exported once, shared by its users (a VM, a
replication) and closed with the last; a swap of the device behind the export never lets a write
straddle it. And a replication of a VM defined at the site is completed from its definition."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from overland.v1 import replica_pb2
from services.replica import DiskInUse, SiteDisks, export_name
from services.replica.errors import InvalidReplicationSettings
from services.replica.nbd import NbdServer
from services.replica.settings import complete_vm
from services.replica.vhd import BlockDevice, Buffer, DiskFormat

MiB = 1024 * 1024
RAW = DiskFormat.RAW


def raw_disk(path: Path, size: int = 4 * MiB) -> Path:
    with path.open("wb") as file:
        file.truncate(size)
    return path


def test_one_file_one_device_one_export_closed_with_the_last_user(tmp_path: Path) -> None:
    exporter = NbdServer(unix_path=tmp_path / "nbd.sock")
    disks = SiteDisks(exporter)
    path = raw_disk(tmp_path / "d0.img")
    name = export_name("vm1", "d0")
    first = disks.open(name, path, "vm", RAW)
    second = disks.open(name, tmp_path / "." / "d0.img", "replication", RAW)
    assert first is second
    assert disks.users(name) == {"vm", "replication"}
    assert list(exporter.exports()) == [name]
    first.write(0, b"written through the site")
    disks.release(first, "vm")
    assert list(exporter.exports()) == [name]
    disks.release(second, "replication")
    assert exporter.exports() == {}
    assert disks.get(name) is None
    assert path.read_bytes().startswith(b"written through the site")


def test_a_name_serves_one_file_and_a_file_has_one_name(tmp_path: Path) -> None:
    disks = SiteDisks()
    disks.open("vm1/d0", raw_disk(tmp_path / "a.img"), "vm", RAW)
    with pytest.raises(DiskInUse, match="one name, one file"):
        disks.open("vm1/d0", raw_disk(tmp_path / "b.img"), "replication", RAW)
    with pytest.raises(DiskInUse, match="already open as disk 'vm1/d0'"):
        disks.open("vm2/d0", tmp_path / "sub" / ".." / "a.img", "vm", RAW)
    # One file, one format: a user that names another is refused, not served other bytes.
    with pytest.raises(DiskInUse, match="open as raw, not vhd"):
        disks.open("vm1/d0", tmp_path / "a.img", "replication", DiskFormat.VHD)
    disks.close()


def test_qemu_finds_an_export_on_the_unix_socket_by_its_encoded_name(tmp_path: Path) -> None:
    disks = SiteDisks(NbdServer(unix_path=tmp_path / "nbd.sock"))
    assert disks.url("web 1 - Test/d0") == f"nbd+unix:///web%201%20-%20Test/d0?socket={tmp_path / 'nbd.sock'}"


class Counting:
    """A target that counts the writes in it, and fails any write that arrives after it was retired."""

    def __init__(self, inner: BlockDevice):
        self.inner = inner
        self.in_flight = 0
        self.retired = False
        self.writes = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write(self, offset: int, data: Buffer) -> None:
        with self._lock:
            assert not self.retired, "a write reached a target after the swap away from it returned"
            self.in_flight += 1
            self.writes += 1
        time.sleep(0.0005)
        self.inner.write(offset, data)
        with self._lock:
            self.in_flight -= 1


def test_a_swap_waits_for_the_writes_in_flight_and_loses_none(tmp_path: Path) -> None:
    disks = SiteDisks()
    disk = disks.open("vm1/d0", raw_disk(tmp_path / "d0.img"), "vm", RAW)
    stop = threading.Event()
    written: dict[int, int] = {}
    errors: list[AssertionError] = []

    def writer(slot: int) -> None:
        count = 0
        try:
            while not stop.is_set():
                count += 1
                disk.write(slot * 4096, count.to_bytes(8, "big"))
                written[slot] = count
        except AssertionError as error:  # a write that reached a retired target
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    targets: list[Counting] = []
    for _ in range(20):
        target = Counting(disk.base)
        disk.swap(target)  # type: ignore[arg-type]
        if targets:
            # The previous target is done with: nothing in it, nothing new may reach it.
            assert targets[-1].in_flight == 0
            targets[-1].retired = True
        targets.append(target)
        time.sleep(0.005)
    disk.swap(disk.base)
    targets[-1].retired = True
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(t.writes for t in targets) > 0
    for slot, count in written.items():
        assert disk.read(slot * 4096, 8) == count.to_bytes(8, "big")
    disks.close()


def defined(*disks: tuple[str, str]) -> replica_pb2.VirtualMachine:
    return replica_pb2.VirtualMachine(
        name="vm1",
        cpu_count=2,
        memory_bytes=512 * MiB,
        disks=[replica_pb2.VmDisk(name=n, path=p) for n, p in disks],
        nics=[replica_pb2.VmNic(mac="52:54:00:0b:00:0a", vsid=5001, failover_addresses=["198.51.100.10/24"])],
    )


def request(*disks: tuple[str, str]) -> replica_pb2.EnableReplicationRequest:
    return replica_pb2.EnableReplicationRequest(
        vm=replica_pb2.VirtualMachine(
            name="vm1", disks=[replica_pb2.VmDisk(name=n, path=p) for n, p in disks]
        ),
        settings=replica_pb2.ReplicationSettings(replica_server="dr.example:50053"),
    )


def test_a_replication_of_a_vm_defined_here_is_the_vm_as_defined() -> None:
    definition = defined(("d0", "/srv/vm1.vhd"))
    assert complete_vm(request(), None) == request()
    completed = complete_vm(request(), definition)
    assert completed.vm.disks == definition.disks
    assert completed.vm.nics == definition.nics
    assert (completed.vm.cpu_count, completed.vm.memory_bytes) == (2, 512 * MiB)
    assert completed.settings.replica_server == "dr.example:50053"
    # Naming the same disks is fine; naming others is not.
    assert complete_vm(request(("d0", "/srv/../srv/vm1.vhd")), definition).vm.disks[0].name == "d0"
    with pytest.raises(InvalidReplicationSettings) as caught:
        complete_vm(request(("d0", "/srv/other.vhd")), definition)
    assert [v.field for v in caught.value.violations] == ["vm.disks"]
