"""A VM's definition at a site (pure): CreateVm's ``VirtualMachine`` checked into a typed value, the
guest network settings and VSIDs that apply where it runs, its ports' names, and the ``VmSpec`` that
runs it on qemu.

Every bad field is reported at once, as ``InvalidVmSpec`` with a field violation each (``vm.name``,
``vm.nics[0].addresses``...). A NIC carries two sets of guest settings: its own (``addresses``,
``gateway``, ``dns``) and the DR site's (``failover_*``), and a VM runs with one of them
(``NetworkSettings``): its own at its primary, the failover ones where it failed over to or runs as a
test failover (a NIC with no failover settings keeps its own), the test one on the NIC's
``test_vsid``.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from overland import defaults
from overland.v1 import replica_pb2
from services.common.errors import FieldViolation
from services.replica.settings import DISK_FORMATS, disk_format, validate_disk_format, validate_name
from services.replica.vhd import DiskFormat
from services.replica.vm.errors import InvalidVmSpec
from services.replica.vm.network import (
    BASE_PARAMETERS,
    COMMAND_LINE_SIZE,
    MAX_NICS,
    GuestNetwork,
    NicSettings,
    check_nic,
    encode_network,
    kernel_command_line,
)
from services.replica.vm.qemu import Disk, Nic, TapBackend, VmSpec

MiB = 1024 * 1024
DEFAULT_MEMORY = 256 * MiB
MIN_MEMORY = 64 * MiB
MAX_MEMORY = 64 * 1024 * MiB
MAX_CPUS = 64
MAX_DISKS = 8
# A VM's name: 1-64 letters, digits, blanks, '.', '_' or '-', starting and ending with neither a
# blank nor a symbol's blank ("web1", "web1 - Test").
NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?$")
# Port (TAP) names: "ovl" + 8 hex digits of the VM's id + "n" + the NIC's number: 13 of Linux's 15.
PORT_PREFIX = "ovl"
# How long qemu's NBD client waits for the site's export to come back (a site restart) before the
# guest's I/O fails: a restart takes seconds; longer is an outage the guest should see.
NBD_RECONNECT_SECONDS = 300


class NetworkSettings(enum.IntEnum):
    """Which settings of its NICs a VM runs with (values of ``overland.v1.VmNetworkSettings``)."""

    PRIMARY = 1
    FAILOVER = 2
    TEST = 3


@dataclass(frozen=True)
class DiskDefinition:
    name: str
    path: Path
    # VHD unless the definition says raw: never guessed from the file.
    fmt: DiskFormat = DiskFormat.VHD


@dataclass(frozen=True)
class NicDefinition:
    """One NIC: its MAC and subnets, and the guest settings at the primary and after failover (None:
    the NIC has no failover settings and keeps its own)."""

    mac: str
    vsid: int
    test_vsid: int
    settings: NicSettings
    failover: NicSettings | None

    def guest(self, which: NetworkSettings) -> NicSettings:
        if which is NetworkSettings.PRIMARY or self.failover is None:
            return self.settings
        return self.failover

    def port_vsid(self, which: NetworkSettings) -> int:
        return self.test_vsid if which is NetworkSettings.TEST else self.vsid


@dataclass(frozen=True)
class VmDefinition:
    """A checked VM: what the runtime needs to run it (the proto it came from is ``config``)."""

    name: str
    cpus: int
    memory_mib: int
    disks: tuple[DiskDefinition, ...]
    nics: tuple[NicDefinition, ...]
    config: replica_pb2.VirtualMachine

    def network(self, which: NetworkSettings) -> GuestNetwork:
        return GuestNetwork(tuple(nic.guest(which) for nic in self.nics))


def _address_of(text: str, field: str, found: list[FieldViolation]) -> IPv4Address | None:
    try:
        return IPv4Address(text)
    except ValueError:
        found.append(FieldViolation(field, f"{text!r} is not an IPv4 address"))
        return None


def _vsid(value: int, field: str, found: list[FieldViolation], required: bool) -> None:
    if not value and not required:
        return
    if not defaults.MIN_VSID <= value <= defaults.MAX_VSID:
        found.append(
            FieldViolation(field, f"must be within [{defaults.MIN_VSID}, {defaults.MAX_VSID}], got {value}")
        )


def _settings(
    mac: str,
    given: tuple[list[str], str, list[str]],
    field: str,
    prefix: str,
    found: list[FieldViolation],
) -> NicSettings | None:
    """The guest settings ``(addresses, gateway, dns)`` of a NIC, the fields named ``prefix`` + their
    name (``failover_addresses``...)."""
    addresses, gateway, dns = given
    before = len(found)
    parsed_addresses = []
    for index, text in enumerate(addresses):
        try:
            if "/" not in text:
                raise ValueError(text)
            parsed_addresses.append(IPv4Interface(text))
        except ValueError:
            found.append(FieldViolation(f"{field}.{prefix}addresses[{index}]", f"{text!r} is not ADDR/LEN"))
    parsed_gateway = _address_of(gateway, f"{field}.{prefix}gateway", found) if gateway else None
    parsed_dns = [_address_of(text, f"{field}.{prefix}dns[{i}]", found) for i, text in enumerate(dns)]
    if len(found) > before:
        return None
    settings = NicSettings(
        mac, tuple(parsed_addresses), parsed_gateway, tuple(d for d in parsed_dns if d is not None)
    )
    try:
        check_nic(settings, field)
    except InvalidVmSpec as error:
        for violation in error.violations:
            name = violation.field
            if not name.endswith(".mac"):
                name = f"{field}.{prefix}{name.removeprefix(field + '.')}"
            found.append(FieldViolation(name, violation.description))
        return None
    return settings


def _check_ca(
    ca: str, settings: NicSettings | None, field: str, found: list[FieldViolation]
) -> IPv4Address | None:
    if not ca:
        return None
    address = _address_of(ca, field, found)
    ips = {a.ip for a in settings.addresses} if settings is not None else set()
    if address is not None and ips and address not in ips:
        found.append(FieldViolation(field, f"{ca} is not one of the NIC's addresses"))
    return address


def _nic(nic: replica_pb2.VmNic, field: str, found: list[FieldViolation]) -> NicDefinition | None:
    before = len(found)
    mac = nic.mac.strip().lower()
    _vsid(nic.vsid, f"{field}.vsid", found, required=True)
    _vsid(nic.test_vsid, f"{field}.test_vsid", found, required=False)
    if nic.test_vsid and nic.test_vsid == nic.vsid:
        found.append(FieldViolation(f"{field}.test_vsid", "must differ from vsid: a test is isolated"))
    own = _settings(mac, (list(nic.addresses), nic.gateway, list(nic.dns)), field, "", found)
    failover_addresses = list(nic.failover_addresses)
    if not failover_addresses and nic.failover_ca and nic.failover_prefix_length:
        # The deprecated single failover address.
        failover_addresses = [f"{nic.failover_ca}/{nic.failover_prefix_length}"]
    failover = None
    if own is not None and (failover_addresses or nic.failover_gateway or nic.failover_dns):
        given = (failover_addresses, nic.failover_gateway, list(nic.failover_dns))
        failover = _settings(mac, given, field, "failover_", found)
    _check_ca(nic.ca, own, f"{field}.ca", found)
    _check_ca(nic.failover_ca, failover, f"{field}.failover_ca", found)
    if len(found) > before or own is None:
        return None
    return NicDefinition(mac, nic.vsid, nic.test_vsid, own, failover)


def _disks(vm: replica_pb2.VirtualMachine, found: list[FieldViolation]) -> list[DiskDefinition]:
    if not vm.disks:
        found.append(FieldViolation("vm.disks", "at least one disk is required: the first is the root"))
    if len(vm.disks) > MAX_DISKS:
        found.append(FieldViolation("vm.disks", f"at most {MAX_DISKS} disks"))
    disks: list[DiskDefinition] = []
    names: set[str] = set()
    paths: set[str] = set()
    for index, disk in enumerate(vm.disks):
        field = f"vm.disks[{index}]"
        found += validate_name(disk.name, f"{field}.name")
        found += validate_disk_format(disk, f"{field}.format")
        if disk.name in names:
            found.append(FieldViolation(f"{field}.name", f"duplicate disk name {disk.name!r}"))
        names.add(disk.name)
        if not disk.path.startswith("/") or "\0" in disk.path:
            found.append(FieldViolation(f"{field}.path", "must be an absolute path"))
            continue
        path = os.path.normpath(disk.path)
        if path in paths:
            found.append(FieldViolation(f"{field}.path", f"{path} is already another disk of the VM"))
        paths.add(path)
        if disk.format in DISK_FORMATS:
            disks.append(DiskDefinition(disk.name, Path(path), disk_format(disk)))
    return disks


def validate_vm(vm: replica_pb2.VirtualMachine) -> VmDefinition:
    """``vm`` checked, with defaults applied (1 CPU, 256 MiB); ``InvalidVmSpec`` names every bad field."""
    found: list[FieldViolation] = []
    if not NAME.match(vm.name):
        found.append(
            FieldViolation("vm.name", "1-64 letters, digits, blanks, '.', '_' or '-', starting with neither")
        )
    cpus = vm.cpu_count or 1
    if not 1 <= cpus <= MAX_CPUS:
        found.append(FieldViolation("vm.cpu_count", f"must be within [1, {MAX_CPUS}], got {cpus}"))
    memory = vm.memory_bytes or DEFAULT_MEMORY
    if memory % MiB or not MIN_MEMORY <= memory <= MAX_MEMORY:
        found.append(
            FieldViolation(
                "vm.memory_bytes",
                f"must be a whole number of MiB within [{MIN_MEMORY // MiB}, {MAX_MEMORY // MiB}] MiB",
            )
        )
    disks = _disks(vm, found)
    if len(vm.nics) > MAX_NICS:
        found.append(FieldViolation("vm.nics", f"at most {MAX_NICS} NICs"))
    nics = [_nic(nic, f"vm.nics[{i}]", found) for i, nic in enumerate(vm.nics[:MAX_NICS])]
    complete = [nic for nic in nics if nic is not None]
    if len(complete) == len(vm.nics):
        macs = [nic.mac for nic in complete]
        if len(set(macs)) != len(macs):
            found.append(FieldViolation("vm.nics", "two NICs have the same MAC"))
        else:
            for which in NetworkSettings:
                _fits_command_line(GuestNetwork(tuple(n.guest(which) for n in complete)), found)
    if found:
        raise InvalidVmSpec(
            f"invalid VM {vm.name!r}: " + "; ".join(f"{v.field}: {v.description}" for v in found), found
        )
    return VmDefinition(vm.name, cpus, memory // MiB, tuple(disks), tuple(complete), vm)


def _fits_command_line(network: GuestNetwork, found: list[FieldViolation]) -> None:
    line = " ".join([*BASE_PARAMETERS, *encode_network(network)])
    if len(line.encode()) >= COMMAND_LINE_SIZE:
        limit = COMMAND_LINE_SIZE - 1
        message = f"the NICs' settings make a kernel command line of {len(line)} bytes, over {limit}"
        if FieldViolation("vm.nics", message) not in found:
            found.append(FieldViolation("vm.nics", message))


def port_name(vm_id: str, nic: int) -> str:
    """The vswitch port (TAP) of a VM's NIC: unique per site (the id is), stable across restarts."""
    return f"{PORT_PREFIX}{vm_id[:8]}n{nic}"


def vm_spec(
    definition: VmDefinition,
    *,
    kernel: Path,
    initrd: Path,
    disk_urls: list[str],
    ports: list[str],
    which: NetworkSettings,
    mtus: list[int] | None = None,
) -> VmSpec:
    """The qemu VM for ``definition``: its disks at ``disk_urls`` (the site's NBD export; qemu waits
    for a restarted site), its NICs on the TAP ``ports`` with the switch's ``mtus`` (0: the default),
    the guest told the ``which`` settings."""
    mtus = mtus or [0] * len(ports)
    return VmSpec(
        name=definition.name,
        kernel=kernel,
        initrd=initrd,
        append=kernel_command_line(definition.network(which)),
        memory_mib=definition.memory_mib,
        cpus=definition.cpus,
        disks=tuple(Disk(url, reconnect_seconds=NBD_RECONNECT_SECONDS) for url in disk_urls),
        nics=tuple(
            Nic(nic.mac, TapBackend(port), mtu)
            for nic, port, mtu in zip(definition.nics, ports, mtus, strict=True)
        ),
    )
