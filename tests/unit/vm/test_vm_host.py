"""The site's VM runtime without qemu: definitions persist and come back after a restart, misuse is a
typed error naming the VM's state, a run record is adopted only while its process lives, the console
reads from any offset, and removal takes the ports (and, if asked, the disks) with it. qemu itself is
in tests/integration/vm."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overland.v1 import replica_pb2
from services.replica import DiskOwned, SiteDisks
from services.replica.config import VmRuntimeConfig
from services.replica.vhd import create_dynamic
from services.replica.vm import (
    GuestImageMissing,
    InvalidVmSpec,
    PortRequest,
    ProcessIdentity,
    RunRecord,
    RunState,
    VmExists,
    VmHost,
    VmInUse,
    VmLocked,
    VmNotFound,
    VmNotRunning,
    identity_of,
    port_name,
)
from services.replica.vm.records import RUN_FILE

MiB = 1024 * 1024


class FakePorts:
    def __init__(self) -> None:
        self.ports: dict[str, PortRequest] = {}
        self.removed: list[str] = []

    def ensure(self, port: PortRequest) -> int:
        self.ports[port.name] = port
        return 1458

    def remove(self, name: str) -> None:
        self.removed.append(name)
        self.ports.pop(name, None)

    def close(self) -> None:
        """Nothing to close."""


class Site:
    def __init__(self, base: Path):
        self.base = base
        self.disks = SiteDisks()
        self.ports = FakePorts()
        self.host = self.open()

    def open(self) -> VmHost:
        config = VmRuntimeConfig(guest_image=self.base / "no-image", accel="tcg", vswitch_endpoint="")
        return VmHost(self.base / "vms", config, self.disks, self.ports, accel_cache=self.base / "accel.json")

    def disk(self, name: str) -> Path:
        return create_dynamic(self.base / name, 16 * MiB)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path)
    yield made
    made.host.close()


def machine(name: str, disk: Path, nics: int = 1) -> replica_pb2.VirtualMachine:
    return replica_pb2.VirtualMachine(
        name=name,
        disks=[replica_pb2.VmDisk(name="d0", path=str(disk))],
        nics=[replica_pb2.VmNic(mac=f"52:54:00:0B:00:{i:02x}", vsid=5001 + i) for i in range(nics)],
    )


def test_a_definition_persists_normalized_and_comes_back(site: Site) -> None:
    created = site.host.create(machine("web 1", site.disk("web1.vhd")))
    assert created.state is RunState.OFF
    view = site.host.to_proto(created)
    assert (view.config.cpu_count, view.config.memory_bytes) == (1, 256 * MiB)
    assert view.config.nics[0].mac == "52:54:00:0b:00:00"
    assert list(view.ports) == [port_name(created.record.id, 0)]
    assert "overland.nic0.mac=52:54:00:0b:00:00" in view.kernel_command_line
    site.host.close()
    again = site.open()
    restored = again.get("web 1")
    assert restored.record.id == created.record.id
    assert again.to_proto(restored) == view
    site.host = again


def test_bad_definitions_are_refused_by_field(site: Site) -> None:
    disk = site.disk("vm1.vhd")
    site.host.create(machine("vm1", disk))
    with pytest.raises(VmExists):
        site.host.create(machine("vm1", site.disk("other.vhd")))
    with pytest.raises(InvalidVmSpec) as caught:
        site.host.create(machine("vm2", site.base / "missing.vhd"))
    assert [v.field for v in caught.value.violations] == ["vm.disks[0].path"]
    # A disk file is one VM's, by whatever path it is reached: the same, a hard link, a symlink.
    link = site.base / "hard-link.vhd"
    link.hardlink_to(disk)
    symlink = site.base / "symlink.vhd"
    symlink.symlink_to(disk)
    for path in (disk, link, symlink):
        with pytest.raises(DiskOwned, match="is disk 'd0' of VM 'vm1'"):
            site.host.create(machine("vm3", path))
    assert [vm.name for vm in site.host.vms()] == ["vm1"]
    # Removing the VM frees its disk file.
    site.host.delete("vm1")
    site.host.create(machine("vm3", link))


def test_misuse_names_the_state_and_leaves_the_vm_off(site: Site) -> None:
    site.host.create(machine("vm1", site.disk("vm1.vhd")))
    with pytest.raises(VmNotRunning, match="'vm1' is off"):
        site.host.stop("vm1")
    with pytest.raises(VmNotRunning, match="'vm1' is off"):
        site.host.stop("vm1", turn_off=True)
    with pytest.raises(VmNotFound):
        site.host.start("vm9")
    site.host.set_lock("vm1", "a replica of vm1 from site-a: fail over to start it")
    with pytest.raises(VmLocked, match="fail over to start it"):
        site.host.start("vm1")
    site.host.set_lock("vm1", "")
    # No guest image: the start fails before qemu, and nothing stays open.
    with pytest.raises(GuestImageMissing, match="make guest"):
        site.host.start("vm1")
    vm = site.host.get("vm1")
    assert vm.state is RunState.OFF
    assert site.disks.get("vm1/d0") is None


def test_removal_takes_the_ports_and_if_asked_the_disks(site: Site) -> None:
    kept, dropped = site.disk("kept.vhd"), site.disk("dropped.vhd")
    first = site.host.create(machine("vm1", kept, nics=2))
    second = site.host.create(machine("vm2", dropped))
    site.host.replicated = lambda name: name == "vm2"
    with pytest.raises(VmInUse, match="disable it first"):
        site.host.delete("vm2")
    site.host.delete("vm1")
    assert site.ports.removed == [port_name(first.record.id, 0), port_name(first.record.id, 1)]
    assert kept.exists()
    assert not first.directory.exists()
    site.host.replicated = lambda name: False
    site.host.delete("vm2", delete_disks=True)
    assert not dropped.exists()
    assert not second.directory.exists()
    assert site.host.vms() == []


def test_the_console_reads_from_any_offset(site: Site) -> None:
    vm = site.host.create(machine("vm1", site.disk("vm1.vhd")))
    assert site.host.console("vm1", 0).data == b""
    (vm.directory / "console.log").write_bytes(b"0123456789")
    chunk = site.host.console("vm1", 3, max_bytes=4)
    assert (chunk.data, chunk.offset, chunk.next_offset, chunk.size) == (b"3456", 3, 7, 10)
    rest = site.host.console("vm1", chunk.next_offset)
    assert (rest.data, rest.next_offset) == (b"789", 10)
    beyond = site.host.console("vm1", 99)
    assert (beyond.data, beyond.offset, beyond.next_offset) == (b"", 10, 10)


def test_a_run_record_is_adopted_only_while_its_process_lives(site: Site) -> None:
    gone = site.host.create(machine("gone", site.disk("gone.vhd")))
    alive = site.host.create(machine("alive", site.disk("alive.vhd")))
    # A process standing in for the qemu of "alive"; "gone"'s ran and exited.
    stand_in = subprocess.Popen(["sleep", "60"])
    try:
        identity = identity_of(stand_in.pid)
        assert identity is not None
        RunRecord(identity, time.time_ns(), "tcg", "console=ttyS0").save(alive.directory)
        # The same process id with another start time: a process that reused the id, not qemu.
        reused = ProcessIdentity(identity.pid, identity.start_ticks + 1)
        RunRecord(reused, 1, "tcg", "").save(gone.directory)
        site.host.close()
        site.host = site.open()
        adopted, reported = site.host.get("alive"), site.host.get("gone")
        assert adopted.state is RunState.RUNNING
        assert site.host.to_proto(adopted).pid == stand_in.pid
        assert site.disks.users("alive/d0") == {"vm"}
        assert reported.state is RunState.OFF
        assert reported.record.last_stop == "qemu exited while the site was down"
        assert not (gone.directory / RUN_FILE).exists()
        # The stand-in exits: the monitor notices, lets the disk go and says how it ended.
        site.host.start_monitor()
        stand_in.kill()
        stand_in.wait()
        deadline = time.monotonic() + 30
        while site.host.get("alive").state is not RunState.OFF:
            assert time.monotonic() < deadline, "the monitor did not notice"
            time.sleep(0.1)
        assert site.disks.get("alive/d0") is None
        assert "adopted" in site.host.get("alive").record.last_stop
    finally:
        stand_in.kill()
        stand_in.wait()
