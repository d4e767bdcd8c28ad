"""The qemu command line of a VM: machine, boot, console and QMP, disks and NIC backends, and checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.replica.vm import (
    Accel,
    DgramBackend,
    Disk,
    InvalidVmSpec,
    Nic,
    StreamBackend,
    TapBackend,
    VmSpec,
    qemu_command,
)

MAC = "52:54:00:00:00:01"


def spec(**overrides: object) -> VmSpec:
    values: dict[str, object] = {
        "name": "vm0",
        "kernel": Path("/g/vmlinux"),
        "initrd": Path("/g/initrd.img"),
        "append": "console=ttyS0 panic=-1",
    }
    values.update(overrides)
    return VmSpec(**values)  # type: ignore[arg-type]


def command(vm: VmSpec, accel: Accel = Accel.TCG) -> list[str]:
    return qemu_command(vm, accel, Path("/w/console.log"), Path("/w/qmp.sock"))


def option(argv: list[str], flag: str) -> list[str]:
    """Every value given to ``flag``, in order."""
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_the_machine_boots_the_kernel_with_console_and_qmp() -> None:
    argv = command(spec(memory_mib=512, cpus=2), Accel.KVM)
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-m") == ["512"]
    assert option(argv, "-smp") == ["2"]
    assert option(argv, "-kernel") == ["/g/vmlinux"]
    assert option(argv, "-initrd") == ["/g/initrd.img"]
    assert option(argv, "-append") == ["console=ttyS0 panic=-1"]
    assert option(argv, "-chardev") == [
        "file,id=console,path=/w/console.log,append=on",
        "socket,id=qmp,path=/w/qmp.sock,server=on,wait=off",
    ]
    assert option(argv, "-serial") == ["chardev:console"]
    assert option(argv, "-mon") == ["chardev=qmp,mode=control"]
    # No default devices, no display, and a reboot or panic ends the process.
    assert {"-nodefaults", "-no-user-config", "-no-reboot"} <= set(argv)
    assert option(argv, "-display") == ["none"]
    assert option(command(spec()), "-accel") == ["tcg"]


def test_disks_on_nbd_and_files() -> None:
    disks = (
        Disk("nbd://127.0.0.1:10809/vm0/disk0"),
        Disk("nbd+unix:///vm0?socket=/run/a,b/nbd.sock"),
        Disk("/images/vm0.vhd", "vpc", read_only=True),
    )
    argv = command(spec(disks=disks))
    assert option(argv, "-drive") == [
        "if=none,id=disk0,file=nbd://127.0.0.1:10809/vm0/disk0,format=raw,cache=writeback",
        # qemu's option syntax doubles a comma inside a value.
        "if=none,id=disk1,file=nbd+unix:///vm0?socket=/run/a,,b/nbd.sock,format=raw,cache=writeback",
        "if=none,id=disk2,file=/images/vm0.vhd,format=vpc,cache=writeback,read-only=on",
    ]
    devices = option(argv, "-device")
    assert devices == [f"virtio-blk-pci,drive=disk{i}" for i in range(3)]


def test_nbd_disks_that_wait_for_their_export_name_it_with_the_driver_options() -> None:
    disks = (
        Disk("nbd+unix:///vm%201%20-%20Test/d0?socket=/run/a,b/nbd.sock", reconnect_seconds=300),
        Disk("nbd://127.0.0.1:10809/vm0/disk0", reconnect_seconds=5),
    )
    assert option(command(spec(disks=disks)), "-drive") == [
        # The URL's export name is percent-encoded; the driver's option is the name itself.
        "if=none,id=disk0,file.driver=nbd,file.server.type=unix,file.server.path=/run/a,,b/nbd.sock,"
        "file.export=vm 1 - Test/d0,file.reconnect-delay=300,format=raw,cache=writeback",
        "if=none,id=disk1,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,"
        "file.server.port=10809,file.export=vm0/disk0,file.reconnect-delay=5,format=raw,cache=writeback",
    ]


def test_nics_on_each_backend() -> None:
    nics = (
        Nic(MAC, TapBackend("vmtap0")),
        Nic("52:54:00:00:00:02", StreamBackend("/run/sw/port1.sock")),
        Nic("52:54:00:00:00:03", StreamBackend("/run/sw/port2.sock", server=True)),
        Nic("52:54:00:00:00:04", DgramBackend("/run/vm/nic3.sock", "/run/sw/port3.sock")),
    )
    argv = command(spec(nics=nics))
    assert option(argv, "-netdev") == [
        "tap,id=net0,ifname=vmtap0,script=no,downscript=no",
        "stream,id=net1,server=off,addr.type=unix,addr.path=/run/sw/port1.sock",
        "stream,id=net2,server=on,addr.type=unix,addr.path=/run/sw/port2.sock",
        "dgram,id=net3,local.type=unix,local.path=/run/vm/nic3.sock,remote.type=unix,remote.path=/run/sw/port3.sock",
    ]
    assert option(argv, "-device") == [
        f"virtio-net-pci,netdev=net{i},mac={nic.mac},romfile=" for i, nic in enumerate(nics)
    ]


def test_a_nic_on_an_overlay_port_gets_the_ports_mtu() -> None:
    # The switch's inner MTU (the PA MTU less the encapsulation) reaches the guest as virtio's host_mtu.
    argv = command(spec(nics=(Nic(MAC, TapBackend("ovl0123abcdn0"), mtu=1458),)))
    assert option(argv, "-device") == [f"virtio-net-pci,netdev=net0,mac={MAC},romfile=,host_mtu=1458"]


def test_extra_arguments_come_last() -> None:
    assert command(spec(extra_args=("-S",)))[-1] == "-S"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a,b"}, "name"),
        ({"memory_mib": 32}, "memory_mib"),
        ({"cpus": 0}, "cpus"),
        ({"disks": (Disk("nbd://127.0.0.1/vm0"),)}, "disks[0].source"),
        ({"disks": (Disk("nbd://127.0.0.1:10809/"),)}, "disks[0].source"),
        ({"disks": (Disk("nbd://127.0.0.1:10809/vm0", "vpc"),)}, "disks[0].format"),
        ({"disks": (Disk("nbd+unix:///vm0"),)}, "disks[0].source"),
        ({"disks": (Disk("nbd+unix:///vm0?socket=relative.sock"),)}, "disks[0].source"),
        ({"disks": (Disk("http://example/vm0.vhd"),)}, "disks[0].source"),
        ({"disks": (Disk("/vm0.img", "vmdk"),)}, "disks[0].format"),
        ({"disks": (Disk("/vm0.img", cache="unsafe"),)}, "disks[0].cache"),
        ({"disks": (Disk("/vm0.img", reconnect_seconds=5),)}, "disks[0].reconnect_seconds"),
        ({"disks": (Disk("nbd://127.0.0.1:10809/vm0", reconnect_seconds=-1),)}, "disks[0].reconnect_seconds"),
        ({"nics": (Nic("52:54:00:00:00:0G", TapBackend("t")),)}, "nics[0].mac"),
        ({"nics": (Nic("01:00:5e:00:00:01", TapBackend("t")),)}, "nics[0].mac"),
        ({"nics": (Nic(MAC, TapBackend("a-name-too-long-for-linux")),)}, "nics[0].backend.ifname"),
        ({"nics": (Nic(MAC, StreamBackend("port.sock")),)}, "nics[0].backend"),
        ({"nics": (Nic(MAC, DgramBackend("/a.sock", "b.sock")),)}, "nics[0].backend"),
        ({"nics": (Nic(MAC, TapBackend("a")), Nic(MAC, TapBackend("b")))}, "nics"),
        ({"nics": (Nic(MAC, TapBackend("t"), mtu=40),)}, "nics[0].mtu"),
    ],
)
def test_bad_specs_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidVmSpec) as error:
        command(spec(**overrides))
    assert error.value.violations[0].field == field
