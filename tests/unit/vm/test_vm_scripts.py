"""The guest's scripts run by busybox sh: applying network settings with a fake ``ip`` and sysfs, and
the layout of the initramfs and root filesystem."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.replica.vm import GuestNetwork, NicSettings, kernel_command_line
from services.replica.vm.errors import InvalidVmSpec
from services.replica.vm.scripts import (
    ECHO_SH,
    INITRAMFS_INIT,
    INITTAB,
    NETCONF_SH,
    POWER_BUTTON_SH,
    PROBE_SH,
    ROOT_INIT,
    SHUTDOWN_SH,
    WORKLOAD_SH,
    ImageFile,
    Kind,
    busybox_links,
    initramfs_files,
    rootfs_files,
    with_directories,
)

APPLETS = ["bin/sh", "sbin/ip", "sbin/init", "usr/bin/nc", "bin/busybox", "sbin/insmod"]


def apply(
    tmp_path: Path, command_line: str, interfaces: dict[str, str], failing: str = ""
) -> tuple[int, str, str]:
    """Run the guest's parse | apply with a fake sysfs holding ``interfaces`` (name: MAC) and an ``ip``
    that logs its arguments (and fails when they contain ``failing``); exit status, ip log, console."""
    sysfs = tmp_path / "net"
    for name, mac in interfaces.items():
        (sysfs / name).mkdir(parents=True)
        (sysfs / name / "address").write_text(f"{mac}\n")
    log = tmp_path / "ip.log"
    script = f"""
{NETCONF_SH}
ip() {{ echo "ip $*" >> {log}; case "$*" in *"{failing or "never"}"*) return 2 ;; esac; }}
overland_parse "$1" | overland_apply
"""
    done = subprocess.run(
        ["busybox", "sh", "-c", script, "sh", command_line],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={
            "OVERLAND_SYSFS_NET": str(sysfs),
            "OVERLAND_RESOLV": str(tmp_path / "resolv.conf"),
            "PATH": "/bin:/usr/bin",
        },
    )
    ip_log = log.read_text() if log.exists() else ""
    return done.returncode, ip_log, done.stdout + done.stderr


def test_apply_finds_each_nic_by_mac_and_configures_it(tmp_path: Path) -> None:
    network = GuestNetwork(
        (
            NicSettings.parse(
                "52:54:00:00:00:01", ["192.0.2.10/24", "198.51.100.10/24"], "192.0.2.1", ["192.0.2.53"]
            ),
            NicSettings.parse(
                "52:54:00:00:00:02", ["203.0.113.5/28"], "203.0.113.1", ["203.0.113.2", "192.0.2.54"]
            ),
        )
    )
    # The interfaces' kernel order is not the NICs' order: the MAC decides.
    code, ip_log, console = apply(
        tmp_path, kernel_command_line(network), {"eth0": "52:54:00:00:00:02", "eth1": "52:54:00:00:00:01"}
    )
    assert code == 0, console
    assert ip_log.splitlines() == [
        "ip link set dev eth1 up",
        "ip addr add 192.0.2.10/24 dev eth1",
        "ip addr add 198.51.100.10/24 dev eth1",
        "ip route add default via 192.0.2.1 dev eth1 metric 100",
        "ip link set dev eth0 up",
        "ip addr add 203.0.113.5/28 dev eth0",
        "ip route add default via 203.0.113.1 dev eth0 metric 101",
    ]
    assert (tmp_path / "resolv.conf").read_text() == (
        "nameserver 192.0.2.53\nnameserver 203.0.113.2\nnameserver 192.0.2.54\n"
    )
    assert "overland-guest: nic 0 eth1 address 198.51.100.10/24" in console
    assert "overland-guest: nic 1 eth0 gateway 203.0.113.1" in console


def test_apply_reports_each_failure_and_still_does_the_rest(tmp_path: Path) -> None:
    command_line = (
        "overland.nic0.mac=52:54:00:00:00:09 overland.nic0.ip=192.0.2.9/24 "
        "overland.nic1.mac=52:54:00:00:00:01 overland.nic1.ip=192.0.2.10/24,198.51.100.10/24"
    )
    code, ip_log, console = apply(
        tmp_path, command_line, {"eth0": "52:54:00:00:00:01"}, failing="192.0.2.10/24"
    )
    assert code == 1
    assert "overland-guest: error: nic 0: no interface has mac 52:54:00:00:00:09" in console
    assert "overland-guest: error: nic 1 eth0: cannot add address 192.0.2.10/24" in console
    assert "ip addr add 198.51.100.10/24 dev eth0" in ip_log


def test_apply_never_expands_a_glob_in_a_list(tmp_path: Path) -> None:
    command_line = "overland.nic0.mac=52:54:00:00:00:01 overland.nic0.dns=* overland.nic0.ip=*"
    code, ip_log, _console = apply(tmp_path, command_line, {"eth0": "52:54:00:00:00:01"})
    assert code == 0
    assert "ip addr add * dev eth0" in ip_log
    assert (tmp_path / "resolv.conf").read_text() == "nameserver *\n"


def test_apply_with_no_nics_does_nothing(tmp_path: Path) -> None:
    code, ip_log, _console = apply(tmp_path, "console=ttyS0 quiet", {"eth0": "52:54:00:00:00:01"})
    assert (code, ip_log) == (0, "")
    assert (tmp_path / "resolv.conf").read_text() == ""


def probe(tmp_path: Path, conf: str | None, answering: str, rounds: int = 2) -> tuple[int, str, str]:
    """Run the guest's probe for ``rounds`` rounds with ``conf`` as its file (None: no file) and a
    ``ping`` that logs its arguments and succeeds for the addresses in ``answering``; exit status,
    ping log, console."""
    conf_path = tmp_path / "probe"
    if conf is not None:
        conf_path.write_text(conf)
    log = tmp_path / "ping.log"
    script = f"""
ping() {{ echo "$*" >> {log}; case " {answering} " in *" $5 "*) return 0 ;; esac; return 1; }}
sleep() {{ :; }}
{PROBE_SH}
"""
    done = subprocess.run(
        ["busybox", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"OVERLAND_PROBE_CONF": str(conf_path), "OVERLAND_PROBE_ROUNDS": str(rounds), "PATH": "/bin"},
    )
    ping_log = log.read_text() if log.exists() else ""
    return done.returncode, ping_log, done.stdout + done.stderr


def test_the_probe_pings_each_listed_address_and_says_which_answered(tmp_path: Path) -> None:
    conf = "# targets\n192.0.2.11\n\n198.51.100.13 the router\n"
    code, pings, console = probe(tmp_path, conf, answering="192.0.2.11")
    assert code == 0, console
    assert pings.splitlines() == ["-c 1 -W 1 192.0.2.11", "-c 1 -W 1 198.51.100.13"] * 2
    assert console.splitlines() == [
        "overland-guest: probe 192.0.2.11 reply 1",
        "overland-guest: probe 198.51.100.13 no reply 1",
        "overland-guest: probe 192.0.2.11 reply 2",
        "overland-guest: probe 198.51.100.13 no reply 2",
    ]


def test_the_probe_pings_nothing_that_is_no_address(tmp_path: Path) -> None:
    conf = "-f\n192.0.2.*\n$(reboot)\n.1\n192.0.2.\n203.0.113.9\n"
    code, pings, console = probe(tmp_path, conf, answering="", rounds=1)
    assert code == 0, console
    assert pings.splitlines() == ["-c 1 -W 1 203.0.113.9"]
    errors = [line for line in console.splitlines() if "error" in line]
    assert len(errors) == 5, console
    assert "overland-guest: probe 203.0.113.9 no reply 1" in console


def test_without_its_file_the_probe_does_nothing(tmp_path: Path) -> None:
    assert probe(tmp_path, None, answering="", rounds=0) == (0, "", "")


@pytest.mark.parametrize(
    "script",
    [INITRAMFS_INIT, NETCONF_SH, ROOT_INIT, WORKLOAD_SH, ECHO_SH, SHUTDOWN_SH, POWER_BUTTON_SH, PROBE_SH],
)
def test_every_script_is_valid_busybox_sh(script: str) -> None:
    done = subprocess.run(
        ["busybox", "sh", "-n", "-c", script], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_the_initramfs_holds_busybox_init_console_and_ordered_modules() -> None:
    modules = [("virtio.ko", b"\x7fELF1"), ("virtio_blk.ko", b"\x7fELF2")]
    files = {f.path: f for f in initramfs_files(b"BUSYBOX", APPLETS, modules)}
    assert files["init"].data.decode() == INITRAMFS_INIT
    assert files["init"].mode == 0o755
    assert files["dev/console"].kind is Kind.CHAR_DEVICE
    assert files["dev/console"].device == (5, 1)
    assert files["modules/order"].data == b"virtio.ko\nvirtio_blk.ko\n"
    assert files["modules/virtio_blk.ko"].data == b"\x7fELF2"
    assert files["bin/sh"] == ImageFile("bin/sh", Kind.SYMLINK, 0o777, target="/bin/busybox")
    assert files["bin/busybox"].data == b"BUSYBOX"
    for directory in ("proc", "sys", "newroot", "dev", "modules", "usr", "usr/bin"):
        assert files[directory].kind is Kind.DIRECTORY
    with pytest.raises(InvalidVmSpec, match="same file name"):
        initramfs_files(b"", APPLETS, [*modules, ("virtio.ko", b"")])


def test_the_root_template_keeps_its_own_init_and_services() -> None:
    files = {f.path: f for f in rootfs_files(b"BUSYBOX", APPLETS)}
    # busybox has an init applet too; the guest's own script wins.
    assert files["sbin/init"].kind is Kind.FILE
    assert files["sbin/init"].data.decode() == ROOT_INIT
    assert files["etc/inittab"].data.decode() == INITTAB
    for service in ("workload.sh", "echo.sh", "shutdown.sh", "probe.sh"):
        assert f"/etc/overland/{service}" in INITTAB
        assert files[f"etc/overland/{service}"].mode == 0o755
    assert files["etc/acpi/PWRF/00000080"].mode == 0o755
    assert files["tmp"].mode == 0o1777
    assert files["var/lib/overland"].kind is Kind.DIRECTORY
    assert files["usr/bin/nc"].target == "/bin/busybox"


def test_directories_come_before_what_they_hold() -> None:
    ordered = with_directories([ImageFile("a/b/c"), ImageFile("d")], ["x/y"])
    paths = [f.path for f in ordered]
    assert paths == ["a", "x", "a/b", "x/y", "a/b/c", "d"]
    for index, file in enumerate(ordered):
        parent = file.path.rpartition("/")[0]
        assert not parent or parent in paths[:index]


def test_applet_paths_cannot_leave_the_image() -> None:
    with pytest.raises(InvalidVmSpec, match="leaves the image"):
        busybox_links(["bin/../../etc/passwd"])
    assert busybox_links(["/bin/sh", "bin/sh", "bin/busybox", ""]) == [
        ImageFile("bin/sh", Kind.SYMLINK, 0o777, target="/bin/busybox")
    ]
