"""A VM's hardware as a typed value, and the qemu command line that runs it (pure).

A VM boots a kernel and initramfs directly (no bootloader), with its console on the first serial port
logged to a file and a QMP socket for control. Disks are virtio-blk, on an NBD export
(``nbd://HOST:PORT/EXPORT`` or ``nbd+unix:///EXPORT?socket=PATH``, where Overland's tracking export
sees every write) or on an image file with an explicit format. NICs are virtio-net with the VM's MAC on
one of three backends: a TAP device qemu opens by name, or a unix socket carrying the frames
(``-netdev stream`` as client or server, or ``-netdev dgram``), so a switch can serve the port.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from services.common.errors import FieldViolation
from services.replica.vm.errors import InvalidVmSpec
from services.replica.vm.network import MAC_PATTERN

QEMU_BINARY = "qemu-system-x86_64"
FILE_FORMATS = ("raw", "vpc", "vhdx", "qcow2")
CACHE_MODES = ("writeback", "none", "writethrough", "directsync")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
# Linux interface names: at most 15 bytes, no slash, no blank.
IFNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MIN_MEMORY_MIB = 64
MAX_MEMORY_MIB = 65536
MAX_CPUS = 64


class Accel(enum.Enum):
    """The accelerator qemu runs the guest on: hardware (KVM) or software emulation (TCG)."""

    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class Disk:
    """A virtio disk: an NBD URL (always ``raw``: the export is the disk's contents) or an image file
    of ``format``. ``cache="writeback"`` passes the guest's flushes through, so an fsync in the guest
    is durable on the export or file. ``reconnect_seconds`` (NBD only): when the export goes away
    (its server restarts), the guest's requests wait this long for it to come back, and are then
    sent again, instead of failing at once."""

    source: str
    format: str = "raw"
    read_only: bool = False
    cache: str = "writeback"
    reconnect_seconds: int = 0

    @property
    def is_nbd(self) -> bool:
        return self.source.startswith(("nbd://", "nbd+unix://"))


@dataclass(frozen=True)
class TapBackend:
    """A TAP device opened by name (qemu must run in the device's network namespace)."""

    ifname: str


@dataclass(frozen=True)
class StreamBackend:
    """Frames over a unix stream socket (each frame length-prefixed): qemu connects to ``path``, or
    listens there with ``server=True``."""

    path: str
    server: bool = False


@dataclass(frozen=True)
class DgramBackend:
    """One frame per datagram between qemu's unix socket ``local`` and the peer's ``remote``."""

    local: str
    remote: str


NicBackend = TapBackend | StreamBackend | DgramBackend


@dataclass(frozen=True)
class Nic:
    """A virtio NIC with the VM's ``mac`` (lower case) on ``backend``."""

    mac: str
    backend: NicBackend
    # The MTU the guest should use (virtio-net's host_mtu: the switch's inner MTU); 0: the default.
    mtu: int = 0


@dataclass(frozen=True)
class VmSpec:
    """Everything qemu needs to run one VM, except where its console log and QMP socket go."""

    name: str
    kernel: Path
    initrd: Path
    append: str
    memory_mib: int = 256
    cpus: int = 1
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    extra_args: tuple[str, ...] = field(default=())


def _invalid(name: str, message: str) -> InvalidVmSpec:
    return InvalidVmSpec(f"{name}: {message}", [FieldViolation(name, message)])


def option_value(value: str) -> str:
    """A value for a qemu ``key=value,...`` option: commas are doubled (qemu's escape)."""
    return value.replace(",", ",,")


def check_disk(disk: Disk, name: str) -> None:
    if disk.cache not in CACHE_MODES:
        raise _invalid(f"{name}.cache", f"must be one of {CACHE_MODES}")
    if disk.reconnect_seconds < 0 or (disk.reconnect_seconds and not disk.is_nbd):
        raise _invalid(f"{name}.reconnect_seconds", "only an NBD disk reconnects, after 0 s or more")
    if disk.is_nbd:
        url = urlsplit(disk.source)
        if disk.format != "raw":
            raise _invalid(f"{name}.format", "an NBD export is a raw disk")
        if not url.path.lstrip("/"):
            raise _invalid(f"{name}.source", "the NBD URL names no export")
        if url.scheme == "nbd":
            if not url.hostname or url.port is None or url.query:
                raise _invalid(f"{name}.source", "expected nbd://HOST:PORT/EXPORT")
        else:
            sockets = parse_qs(url.query).get("socket", [])
            if url.netloc or len(sockets) != 1 or not sockets[0].startswith("/"):
                raise _invalid(f"{name}.source", "expected nbd+unix:///EXPORT?socket=/ABSOLUTE/PATH")
        return
    if "://" in disk.source or not disk.source:
        raise _invalid(f"{name}.source", "expected an nbd:// or nbd+unix:// URL or an image file path")
    if disk.format not in FILE_FORMATS:
        raise _invalid(f"{name}.format", f"must be one of {FILE_FORMATS}")


# virtio-net's host_mtu bounds (IPv4's minimum, the largest frame length).
MIN_MTU = 68
MAX_MTU = 65535


def check_nic(nic: Nic, name: str) -> None:
    if not MAC_PATTERN.match(nic.mac) or int(nic.mac[:2], 16) & 1:
        raise _invalid(f"{name}.mac", f"{nic.mac!r} is not a lower-case unicast MAC")
    if nic.mtu and not MIN_MTU <= nic.mtu <= MAX_MTU:
        raise _invalid(f"{name}.mtu", f"{nic.mtu} is not an MTU ({MIN_MTU}..{MAX_MTU})")
    backend = nic.backend
    if isinstance(backend, TapBackend):
        if not IFNAME_PATTERN.match(backend.ifname):
            raise _invalid(f"{name}.backend.ifname", f"{backend.ifname!r} is not an interface name")
        return
    paths = (backend.path,) if isinstance(backend, StreamBackend) else (backend.local, backend.remote)
    for path in paths:
        if not path.startswith("/"):
            raise _invalid(f"{name}.backend", f"socket path {path!r} is not absolute")


def check_spec(spec: VmSpec) -> None:
    """Raise ``InvalidVmSpec`` (naming the field) unless ``spec`` can run."""
    if not NAME_PATTERN.match(spec.name):
        raise _invalid("name", f"{spec.name!r}: 1-64 letters, digits, blanks, '.', '_' or '-'")
    if not MIN_MEMORY_MIB <= spec.memory_mib <= MAX_MEMORY_MIB:
        raise _invalid("memory_mib", f"must be within [{MIN_MEMORY_MIB}, {MAX_MEMORY_MIB}]")
    if not 1 <= spec.cpus <= MAX_CPUS:
        raise _invalid("cpus", f"must be within [1, {MAX_CPUS}]")
    for index, disk in enumerate(spec.disks):
        check_disk(disk, f"disks[{index}]")
    for index, nic in enumerate(spec.nics):
        check_nic(nic, f"nics[{index}]")
    if len({nic.mac for nic in spec.nics}) != len(spec.nics):
        raise _invalid("nics", "two NICs have the same MAC")


def nbd_options(source: str, reconnect_seconds: int) -> list[str]:
    """The NBD URL ``source`` as the block driver's own options, which (unlike the URL) also take
    the reconnect delay."""
    url = urlsplit(source)
    if url.scheme == "nbd":
        server = ["file.server.type=inet", f"file.server.host={url.hostname}", f"file.server.port={url.port}"]
    else:
        path = parse_qs(url.query)["socket"][0]
        server = ["file.server.type=unix", f"file.server.path={option_value(path)}"]
    export = option_value(unquote(url.path[1:]))
    return ["file.driver=nbd", *server, f"file.export={export}", f"file.reconnect-delay={reconnect_seconds}"]


def disk_args(disk: Disk, index: int) -> list[str]:
    if disk.reconnect_seconds:
        source = nbd_options(disk.source, disk.reconnect_seconds)
    else:
        source = [f"file={option_value(disk.source)}"]
    drive = ["if=none", f"id=disk{index}", *source, f"format={disk.format}", f"cache={disk.cache}"]
    if disk.read_only:
        drive.append("read-only=on")
    return ["-drive", ",".join(drive), "-device", f"virtio-blk-pci,drive=disk{index}"]


def netdev_option(backend: NicBackend, netdev_id: str) -> str:
    if isinstance(backend, TapBackend):
        return f"tap,id={netdev_id},ifname={backend.ifname},script=no,downscript=no"
    if isinstance(backend, StreamBackend):
        server = "on" if backend.server else "off"
        return f"stream,id={netdev_id},server={server},addr.type=unix,addr.path={option_value(backend.path)}"
    return (
        f"dgram,id={netdev_id},local.type=unix,local.path={option_value(backend.local)},"
        f"remote.type=unix,remote.path={option_value(backend.remote)}"
    )


def nic_args(nic: Nic, index: int) -> list[str]:
    # romfile= (empty): no iPXE option ROM; the kernel is loaded directly, and the ROM only slows boot.
    return [
        "-netdev",
        netdev_option(nic.backend, f"net{index}"),
        "-device",
        f"virtio-net-pci,netdev=net{index},mac={nic.mac},romfile="
        + (f",host_mtu={nic.mtu}" if nic.mtu else ""),
    ]


def qemu_command(
    spec: VmSpec, accel: Accel, console_log: Path, qmp_socket: Path, qemu: str = QEMU_BINARY
) -> list[str]:
    """The qemu argv that runs ``spec`` on ``accel``, its console appended to ``console_log`` and QMP
    served on the unix socket ``qmp_socket``. The VM powers off instead of rebooting (-no-reboot), so
    a guest reboot or panic (``panic=-1``) ends the process."""
    check_spec(spec)
    argv = [
        qemu,
        "-name",
        option_value(spec.name),
        "-machine",
        "pc",
        "-accel",
        accel.value,
        "-m",
        str(spec.memory_mib),
        "-smp",
        str(spec.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initrd),
        "-append",
        spec.append,
        "-chardev",
        f"file,id=console,path={option_value(str(console_log))},append=on",
        "-serial",
        "chardev:console",
        "-chardev",
        f"socket,id=qmp,path={option_value(str(qmp_socket))},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
    ]
    for index, disk in enumerate(spec.disks):
        argv += disk_args(disk, index)
    for index, nic in enumerate(spec.nics):
        argv += nic_args(nic, index)
    return [*argv, *spec.extra_args]
