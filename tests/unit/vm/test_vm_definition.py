"""A VM's definition (CreateVm's free input): any ``VirtualMachine`` is either a definition or
``InvalidVmSpec`` naming its bad fields, never anything else; a valid one runs with the settings of
the place it runs (the kernel command line decodes back to them), on the VSID of that place."""

from __future__ import annotations

from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overland import defaults
from overland.v1 import replica_pb2
from services.common.errors import FieldViolation
from services.replica.vhd import DiskFormat
from services.replica.vm import (
    Accel,
    InvalidVmSpec,
    NetworkSettings,
    decode_network,
    port_name,
    qemu_command,
    validate_vm,
    vm_spec,
)
from services.replica.vm.qemu import IFNAME_PATTERN
from tests.unit.vm.test_vm_network import interfaces, macs

MiB = 1024 * 1024
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)


def disk(name: str = "d0", path: str = "/srv/vms/vm1.vhd") -> replica_pb2.VmDisk:
    return replica_pb2.VmDisk(name=name, path=path)


def nic(**fields: object) -> replica_pb2.VmNic:
    values: dict[str, object] = {"mac": "52:54:00:0b:00:0a", "vsid": 5001}
    values.update(fields)
    return replica_pb2.VmNic(**values)  # type: ignore[arg-type]


def vm(**fields: object) -> replica_pb2.VirtualMachine:
    values: dict[str, object] = {"name": "vm1", "disks": [disk()]}
    values.update(fields)
    return replica_pb2.VirtualMachine(**values)  # type: ignore[arg-type]


def refused(machine: replica_pb2.VirtualMachine) -> set[str]:
    with pytest.raises(InvalidVmSpec) as caught:
        validate_vm(machine)
    assert caught.value.violations
    return {v.field for v in caught.value.violations}


# -- free input ---------------------------------------------------------------------------------------

free_nics = st.builds(
    replica_pb2.VmNic,
    mac=st.one_of(TEXT, macs),
    vsid=st.integers(0, 2**32 - 1),
    ca=TEXT,
    failover_ca=TEXT,
    failover_prefix_length=st.integers(0, 40),
    failover_gateway=TEXT,
    failover_dns=st.lists(TEXT, max_size=5),
    addresses=st.lists(st.one_of(TEXT, interfaces.map(str)), max_size=3),
    gateway=TEXT,
    dns=st.lists(TEXT, max_size=5),
    failover_addresses=st.lists(st.one_of(TEXT, interfaces.map(str)), max_size=3),
    test_vsid=st.integers(0, 2**32 - 1),
)
free_vms = st.builds(
    replica_pb2.VirtualMachine,
    name=TEXT,
    cpu_count=st.integers(0, 2**32 - 1),
    memory_bytes=st.integers(0, 2**64 - 1),
    nics=st.lists(free_nics, max_size=9),
    disks=st.lists(st.builds(replica_pb2.VmDisk, name=TEXT, path=TEXT), max_size=9),
)


@settings(max_examples=300, deadline=None)
@given(free_vms)
def test_any_vm_is_a_definition_or_names_its_bad_fields(machine: replica_pb2.VirtualMachine) -> None:
    violations: tuple[FieldViolation, ...] | None = None
    try:
        definition = validate_vm(machine)
    except InvalidVmSpec as error:
        violations = error.violations
    if violations is not None:
        assert violations
        assert all(v.field.startswith("vm.") and v.description for v in violations)
        return
    assert definition.name == machine.name
    assert 1 <= definition.cpus <= 64
    assert len(definition.disks) == len(machine.disks) >= 1


# -- valid VMs ----------------------------------------------------------------------------------------


def ip_of(address: IPv4Interface) -> object:
    return address.ip


def usable(address: IPv4Interface) -> bool:
    network = address.network
    return network.prefixlen >= 31 or address.ip not in (network.network_address, network.broadcast_address)


@st.composite
def valid_nics(draw: st.DrawFn, mac: str) -> replica_pb2.VmNic:
    own = [a for a in draw(st.lists(interfaces, min_size=1, max_size=3, unique_by=ip_of)) if usable(a)]
    failover = [a for a in draw(st.lists(interfaces, max_size=3, unique_by=ip_of)) if usable(a)]
    vsid = draw(st.integers(defaults.MIN_VSID, defaults.MAX_VSID - 1))
    return replica_pb2.VmNic(
        mac=mac,
        vsid=vsid,
        test_vsid=draw(st.sampled_from([0, vsid + 1])),
        addresses=[a.with_prefixlen for a in own],
        ca=str(own[0].ip) if own else "",
        failover_addresses=[a.with_prefixlen for a in failover],
        dns=[str(a.ip) for a in draw(st.lists(interfaces, max_size=2))],
    )


@st.composite
def valid_vms(draw: st.DrawFn) -> replica_pb2.VirtualMachine:
    count = draw(st.integers(0, 3))
    mac_list = draw(
        st.lists(macs.filter(lambda m: m != "00:00:00:00:00:00"), min_size=count, max_size=count, unique=True)
    )
    return replica_pb2.VirtualMachine(
        name=draw(st.from_regex(r"\A[a-z0-9][a-z0-9 ._-]{0,20}[a-z0-9]\Z")),
        cpu_count=draw(st.integers(0, 64)),
        memory_bytes=draw(st.integers(0, 1024)) * MiB,
        nics=[draw(valid_nics(mac)) for mac in mac_list],
        disks=[disk(f"d{i}", f"/srv/vms/disk{i}.vhd") for i in range(draw(st.integers(1, 4)))],
    )


@settings(max_examples=150, deadline=None)
@given(valid_vms(), st.sampled_from(list(NetworkSettings)))
def test_a_valid_vm_boots_with_the_settings_of_where_it_runs(
    machine: replica_pb2.VirtualMachine, which: NetworkSettings
) -> None:
    if machine.memory_bytes and machine.memory_bytes < 64 * MiB:
        assert refused(machine) == {"vm.memory_bytes"}
        return
    definition = validate_vm(machine)
    ports = [port_name("0123456789abcdef", i) for i in range(len(definition.nics))]
    spec = vm_spec(
        definition,
        kernel=Path("/boot/vmlinux"),
        initrd=Path("/boot/initrd.img"),
        disk_urls=[f"nbd+unix:///vm/{d.name}?socket=/run/nbd.sock" for d in definition.disks],
        ports=ports,
        which=which,
    )
    qemu_command(spec, Accel.TCG, Path("/run/console.log"), Path("/run/qmp.sock"))
    guest = decode_network(spec.append)
    for given_nic, guest_nic, checked in zip(machine.nics, guest.nics, definition.nics, strict=True):
        # Where it failed over (or runs a test) a NIC has its failover settings; without any, its own.
        failed_over = which is not NetworkSettings.PRIMARY and bool(given_nic.failover_addresses)
        wanted = given_nic.failover_addresses if failed_over else given_nic.addresses
        assert [a.with_prefixlen for a in guest_nic.addresses] == list(wanted)
        assert guest_nic == checked.guest(which)
        expected_vsid = given_nic.test_vsid if which is NetworkSettings.TEST else given_nic.vsid
        assert checked.port_vsid(which) == expected_vsid
    assert spec.memory_mib == (machine.memory_bytes // MiB or 256)
    assert spec.cpus == (machine.cpu_count or 1)


# -- each bad field by name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "field"),
    [
        (vm(name=""), "vm.name"),
        (vm(name=" vm1"), "vm.name"),
        (vm(name="vm1 "), "vm.name"),
        (vm(name="vm/1"), "vm.name"),
        (vm(name="v" * 65), "vm.name"),
        (vm(cpu_count=65), "vm.cpu_count"),
        (vm(memory_bytes=63 * MiB), "vm.memory_bytes"),
        (vm(memory_bytes=256 * MiB + 1), "vm.memory_bytes"),
        (vm(memory_bytes=65537 * MiB), "vm.memory_bytes"),
        (vm(disks=[]), "vm.disks"),
        (vm(disks=[disk(path="vm1.vhd")]), "vm.disks[0].path"),
        (vm(disks=[disk(name="bad name")]), "vm.disks[0].name"),
        (vm(disks=[replica_pb2.VmDisk(name="d0", path="/srv/vms/vm1.vhd", format=7)]), "vm.disks[0].format"),  # type: ignore[arg-type]
        (vm(disks=[disk(), disk()]), "vm.disks[1].name"),
        (vm(disks=[disk(), disk(name="d1", path="/srv/vms/../vms/vm1.vhd")]), "vm.disks[1].path"),
        (vm(nics=[nic(mac="52:54:00:0b:00")]), "vm.nics[0].mac"),
        (vm(nics=[nic(mac="01:00:5e:00:00:01")]), "vm.nics[0].mac"),
        (vm(nics=[nic(vsid=0)]), "vm.nics[0].vsid"),
        (vm(nics=[nic(vsid=defaults.MAX_VSID + 1)]), "vm.nics[0].vsid"),
        (vm(nics=[nic(test_vsid=5001)]), "vm.nics[0].test_vsid"),
        (vm(nics=[nic(test_vsid=5)]), "vm.nics[0].test_vsid"),
        (vm(nics=[nic(addresses=["192.0.2.10"])]), "vm.nics[0].addresses[0]"),
        (vm(nics=[nic(addresses=["192.0.2.0/24"])]), "vm.nics[0].addresses"),
        (vm(nics=[nic(addresses=["192.0.2.10/24"], gateway="198.51.100.1")]), "vm.nics[0].gateway"),
        (vm(nics=[nic(addresses=["192.0.2.10/24"], gateway="gateway")]), "vm.nics[0].gateway"),
        (vm(nics=[nic(dns=["192.0.2.53"] * 5)]), "vm.nics[0].dns"),
        (vm(nics=[nic(dns=["ns1"])]), "vm.nics[0].dns[0]"),
        (vm(nics=[nic(addresses=["192.0.2.10/24"], ca="192.0.2.11")]), "vm.nics[0].ca"),
        (vm(nics=[nic(failover_addresses=["198.51.100.10/33"])]), "vm.nics[0].failover_addresses[0]"),
        (
            vm(nics=[nic(failover_addresses=["198.51.100.10/24"], failover_gateway="192.0.2.1")]),
            "vm.nics[0].failover_gateway",
        ),
        (
            vm(nics=[nic(failover_addresses=["198.51.100.10/24"], failover_ca="198.51.100.9")]),
            "vm.nics[0].failover_ca",
        ),
        (vm(nics=[nic(), nic()]), "vm.nics"),
        (vm(nics=[nic(mac=f"52:54:00:00:00:{i:02x}") for i in range(9)]), "vm.nics"),
        (
            vm(nics=[nic(addresses=[f"192.0.2.{i}/24" for i in range(1, 17)] + ["192.0.2.100/24"])]),
            "vm.nics[0].addresses",
        ),
    ],
)
def test_each_bad_field_is_named(machine: replica_pb2.VirtualMachine, field: str) -> None:
    assert field in refused(machine)


def test_every_bad_field_is_named_at_once() -> None:
    machine = vm(name="", cpu_count=99, disks=[disk(path="relative")], nics=[nic(vsid=1)])
    assert refused(machine) == {"vm.name", "vm.cpu_count", "vm.disks[0].path", "vm.nics[0].vsid"}


def test_a_command_line_over_the_kernel_limit_is_refused() -> None:
    many = [f"192.0.2.{i}/24" for i in range(1, 17)]
    nics = [nic(mac=f"52:54:00:00:00:{i:02x}", addresses=many) for i in range(8)]
    assert "vm.nics" in refused(vm(nics=nics))


def test_defaults_and_the_deprecated_failover_address() -> None:
    definition = validate_vm(
        vm(
            nics=[
                nic(
                    mac="52:54:00:0B:00:0A",
                    addresses=["192.0.2.10/24"],
                    failover_ca="198.51.100.10",
                    failover_prefix_length=24,
                )
            ]
        )
    )
    assert (definition.cpus, definition.memory_mib) == (1, 256)
    (only,) = definition.nics
    assert only.mac == "52:54:00:0b:00:0a"
    assert only.failover is not None
    assert only.failover.addresses == (IPv4Interface("198.51.100.10/24"),)
    assert only.guest(NetworkSettings.FAILOVER).addresses == (IPv4Interface("198.51.100.10/24"),)
    assert only.guest(NetworkSettings.PRIMARY).addresses == (IPv4Interface("192.0.2.10/24"),)


@given(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32), st.integers(0, 7))
def test_port_names_are_interface_names(vm_id: str, index: int) -> None:
    name = port_name(vm_id, index)
    assert IFNAME_PATTERN.match(name)
    assert name != port_name(vm_id, (index + 1) % 8)


def test_a_disk_is_a_vhd_unless_the_definition_says_raw() -> None:
    raw = replica_pb2.VmDisk(name="d1", path="/srv/vms/vm1.img", format=replica_pb2.DISK_FORMAT_RAW)
    definition = validate_vm(vm(disks=[disk(), raw]))
    assert [d.fmt for d in definition.disks] == [DiskFormat.VHD, DiskFormat.RAW]
