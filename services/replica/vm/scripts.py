"""The guest image's scripts (busybox sh) and the file layout of its initramfs and root filesystem.

The initramfs (``INITRAMFS_INIT``) loads the kernel modules listed in ``/modules/order``, mounts
``/dev/vda`` (ext4) and switches root. The root's ``/sbin/init`` (``ROOT_INIT``) applies the network
settings of the kernel command line (``NETCONF_SH``, the grammar of ``services.replica.vm.network``) and
hands PID 1 to busybox init, which runs the workload, a TCP echo server and the probe (``INITTAB``:
the probe pings the addresses its file on the guest's disk lists, ``PROBE_CONF``); on
ACPI powerdown it stops them and remounts the root read-only (``SHUTDOWN_SH``). Every step is logged to
the serial console with the prefixes of ``services.replica.vm.console``, which tests and the runtime
read. Nothing here touches a disk or a process: the build tool writes these files.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.replica.vm.errors import InvalidVmSpec

# The TCP echo service's well-known port (RFC 862).
ECHO_PORT = 7
WORKLOAD_DIR = "/var/lib/overland"
WORKLOAD_LOG = f"{WORKLOAD_DIR}/workload.log"
# What the guest's probe pings: on the VM's own disk, so the setting travels with the disk (a test
# writes it into the disk's template; the runtime has no say in it).
PROBE_CONF = "/etc/overland/probe"

INITRAMFS_INIT = """#!/bin/sh
# Overland guest initramfs: load the disk, network and filesystem modules in dependency order
# (/modules/order), mount the root disk /dev/vda (ext4) and switch to its /sbin/init.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
say() { echo "overland-initramfs: $*"; }
fail() { say "error: $*"; poweroff -f; }
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
say "started, kernel $(uname -r)"
while read -r module; do
    # A module the virtual hardware lacks (crc32c-intel under TCG) fails with ENODEV: harmless.
    if error=$(insmod "/modules/$module" 2>&1); then
        say "loaded $module"
    else
        say "skipped $module: $error"
    fi
done < /modules/order
set -f
for word in $(cat /proc/cmdline); do
    case "$word" in
    overland.break=initramfs)
        say "ready (break=initramfs)"
        poweroff -f
        ;;
    esac
done
set +f
say "ready"
root=/dev/vda
waited=0
while [ ! -b "$root" ]; do
    [ "$waited" -ge 100 ] && fail "no root disk $root"
    sleep 0.1
    waited=$((waited + 1))
done
mkdir -p /newroot
mount -t ext4 -o rw "$root" /newroot || fail "cannot mount $root"
say "mounted $root"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
"""

NETCONF_SH = """# Overland guest network settings: parse the kernel command line (overland.nicN.FIELD=VALUE,
# the grammar of services/replica/vm/network.py) and apply it with busybox ip. Sourced by
# /sbin/init, and by the unit tests with a fake ip and sysfs.
OVERLAND_SYSFS_NET=${OVERLAND_SYSFS_NET:-/sys/class/net}
OVERLAND_RESOLV=${OVERLAND_RESOLV:-/etc/resolv.conf}

overland_say() { echo "overland-guest: $*"; }

# Print one line per NIC in index order, "INDEX MAC ADDRESSES GATEWAY DNS": lists comma-separated,
# "-" for a field not given. Words off the grammar are ignored; a later word wins.
overland_parse() {
    set -f
    _indexes=""
    for _word in $1; do
        case "$_word" in
        overland.nic*=*) ;;
        *) continue ;;
        esac
        _key=${_word%%=*}
        _value=${_word#*=}
        _rest=${_key#overland.nic}
        _index=${_rest%%.*}
        _field=${_rest#*.}
        case "$_index" in
        "" | *[!0-9]* | 0?*) continue ;;
        esac
        case "$_field" in
        mac | ip | gw | dns) ;;
        *) continue ;;
        esac
        # Safe: the index is digits and the field one of four names; the value is never expanded.
        eval "_nic_${_index}_${_field}=\\$_value"
        case " $_indexes " in
        *" $_index "*) ;;
        *) _indexes="$_indexes $_index" ;;
        esac
    done
    set +f
    for _index in $(for _i in $_indexes; do echo "$_i"; done | sort -n); do
        eval "_mac=\\${_nic_${_index}_mac:--} _ip=\\${_nic_${_index}_ip:--}"
        eval "_gw=\\${_nic_${_index}_gw:--} _dns=\\${_nic_${_index}_dns:--}"
        echo "$_index $_mac $_ip $_gw $_dns"
    done
}

# Apply overland_parse's lines (stdin): find each NIC by its MAC, bring it up, add its addresses, its
# default route (metric 100 + index, so nic0 is preferred) and its name servers. Returns 1 if any
# step failed, after trying the others.
overland_apply() {
    _status=0
    : > "$OVERLAND_RESOLV"
    while read -r _index _mac _ips _gw _dns; do
        _dev=""
        for _path in "$OVERLAND_SYSFS_NET"/*; do
            [ "$(cat "$_path/address" 2>/dev/null)" = "$_mac" ] && _dev=${_path##*/}
        done
        if [ -z "$_dev" ]; then
            overland_say "error: nic $_index: no interface has mac $_mac"
            _status=1
            continue
        fi
        ip link set dev "$_dev" up || _status=1
        overland_say "nic $_index $_dev mac $_mac up"
        # The lists are data: no glob expansion while they are split.
        set -f
        for _item in $(echo "$_ips" | tr , ' '); do
            [ "$_item" = - ] && continue
            if ip addr add "$_item" dev "$_dev"; then
                overland_say "nic $_index $_dev address $_item"
            else
                overland_say "error: nic $_index $_dev: cannot add address $_item"
                _status=1
            fi
        done
        if [ "$_gw" != - ]; then
            if ip route add default via "$_gw" dev "$_dev" metric $((100 + _index)); then
                overland_say "nic $_index $_dev gateway $_gw"
            else
                overland_say "error: nic $_index $_dev: cannot route through $_gw"
                _status=1
            fi
        fi
        for _item in $(echo "$_dns" | tr , ' '); do
            [ "$_item" = - ] && continue
            echo "nameserver $_item" >> "$OVERLAND_RESOLV"
            overland_say "nic $_index dns $_item"
        done
        set +f
    done
    return $_status
}
"""

ROOT_INIT = """#!/bin/sh
# Overland guest /sbin/init: start acpid, apply the network settings of the kernel command line,
# then hand PID 1 to busybox init, which runs the workload and the TCP echo server (/etc/inittab).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
. /etc/overland/netconf.sh
[ -e /dev/console ] || mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
overland_say "root init started"
# acpid first, so a powerdown pressed once the network is up is not lost (it daemonizes).
acpid -c /etc/acpi -l /dev/null
ip link set dev lo up
overland_parse "$(cat /proc/cmdline)" > /run/overland-network
if overland_apply < /run/overland-network; then
    overland_say "network up"
else
    overland_say "network incomplete"
fi
exec /bin/busybox init
"""

WORKLOAD_SH = f"""#!/bin/sh
# Overland guest workload: append one record a second to {WORKLOAD_LOG} and fsync it before saying
# so on the console, so every record the console reports as synced is durable on the disk.
dir={WORKLOAD_DIR}
log={WORKLOAD_LOG}
mkdir -p "$dir"
boot=$(( $(cat "$dir/boots" 2>/dev/null || echo 0) + 1 ))
echo "$boot" > "$dir/boots.new" && sync "$dir/boots.new" && mv "$dir/boots.new" "$dir/boots"
touch "$log"
sync "$log" "$dir"
echo $$ > /run/workload.pid
stopping=0
trap 'stopping=1' TERM
seq=0
while [ "$stopping" = 0 ]; do
    seq=$((seq + 1))
    echo "boot=$boot seq=$seq" >> "$log"
    if ! sync "$log"; then
        echo "overland-guest: error: workload fsync failed at boot=$boot seq=$seq"
        exit 1
    fi
    echo "overland-guest: workload boot=$boot seq=$seq synced"
    sleep 1
done
echo "overland-guest: workload stopped at boot=$boot seq=$seq"
"""

ECHO_SH = f"""#!/bin/sh
# Overland guest TCP echo server (RFC 862): one cat per connection.
echo "overland-guest: echo server on tcp port {ECHO_PORT}"
exec nc -ll -p {ECHO_PORT} -e /bin/cat
"""

PROBE_SH = f"""#!/bin/sh
# Overland guest probe: once a second, ping every IPv4 address listed in {PROBE_CONF} (one a line,
# "#" starts a comment) once, and say on the console whether it answered, so that whoever reads the
# console knows what this guest reached. Without the file it does nothing.
conf=${{OVERLAND_PROBE_CONF:-{PROBE_CONF}}}
[ -f "$conf" ] || exit 0
# For the unit tests: stop after this many rounds (0: never).
rounds=${{OVERLAND_PROBE_ROUNDS:-0}}
round=0
while [ "$rounds" = 0 ] || [ "$round" -lt "$rounds" ]; do
    round=$((round + 1))
    while read -r target _rest; do
        case "$target" in
        "" | "#"*) continue ;;
        # Digits and dots only: nothing that ping could take for an option.
        *[!0-9.]* | .* | *.)
            echo "overland-guest: error: probe target $target is not an IPv4 address"
            continue
            ;;
        esac
        if ping -c 1 -W 1 "$target" > /dev/null 2>&1; then
            echo "overland-guest: probe $target reply $round"
        else
            echo "overland-guest: probe $target no reply $round"
        fi
    done < "$conf"
    sleep 1
done
"""

POWER_BUTTON_SH = """#!/bin/sh
# Run by acpid on the ACPI power button (qemu's system_powerdown): an orderly busybox init poweroff.
echo "overland-guest: ACPI power button"
exec poweroff
"""

SHUTDOWN_SH = """#!/bin/sh
# Overland guest shutdown (busybox init's shutdown action, before it kills what is left): stop the
# workload after its current record, stop the other processes, remount the root read-only (clean).
echo "overland-guest: shutdown started"
if [ -f /run/workload.pid ]; then
    pid=$(cat /run/workload.pid)
    kill -TERM "$pid" 2>/dev/null
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
fi
kill -TERM -1
sleep 0.2
sync
if mount -o remount,ro /; then
    echo "overland-guest: shutdown root read-only"
else
    echo "overland-guest: error: the root is still read-write"
fi
"""

INITTAB = """# busybox init: the guest's services; the shutdown action runs before init kills what is left.
::once:/etc/overland/workload.sh
::respawn:/etc/overland/echo.sh
::once:/etc/overland/probe.sh
::shutdown:/etc/overland/shutdown.sh
::ctrlaltdel:/bin/busybox reboot
"""


class Kind(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    CHAR_DEVICE = "char"


@dataclass(frozen=True)
class ImageFile:
    """One entry of an image: a file with ``data``, a directory, a link to ``target`` or a character
    device ``device`` (major, minor). ``path`` is relative to the image's root; ``mode`` holds the
    permission bits only."""

    path: str
    kind: Kind = Kind.FILE
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    device: tuple[int, int] = (0, 0)


def busybox_links(applets: Sequence[str], exclude: Iterable[str] = ()) -> list[ImageFile]:
    """Links to ``/bin/busybox`` for ``busybox --list-full`` output (``bin/sh``, ``sbin/ip``...), but
    not at the ``exclude`` paths (files of the image's own, like the root's ``sbin/init``)."""
    skip = {"bin/busybox", *exclude}
    links = []
    for applet in sorted({a.strip().lstrip("/") for a in applets}):
        if not applet or applet in skip:
            continue
        if ".." in applet.split("/"):
            raise InvalidVmSpec(f"busybox applet path {applet!r} leaves the image")
        links.append(ImageFile(applet, Kind.SYMLINK, 0o777, target="/bin/busybox"))
    return links


def with_directories(files: Sequence[ImageFile], extra: Iterable[str] = ()) -> list[ImageFile]:
    """``files`` after every parent directory of theirs and the ``extra`` ones, parents first (as an
    archive lists them)."""
    wanted: dict[str, int] = {}
    for path in [*(f"{d}/" for d in extra), *(f.path for f in files)]:
        parts = path.split("/")[:-1]
        for i in range(len(parts)):
            wanted.setdefault("/".join(parts[: i + 1]), 0o755)
    # Any process may make its scratch files in /tmp, as on any Unix (the sticky bit keeps them apart).
    if "tmp" in wanted:
        wanted["tmp"] = 0o1777
    ordered = sorted(wanted, key=lambda d: (d.count("/"), d))
    return [*(ImageFile(d, Kind.DIRECTORY, wanted[d]) for d in ordered), *files]


def initramfs_files(
    busybox: bytes, applets: Sequence[str], modules: Sequence[tuple[str, bytes]]
) -> list[ImageFile]:
    """The initramfs: busybox and its links, ``/init``, ``/dev/console`` (the kernel opens it before
    /init runs) and the modules (file name, content) with their load order."""
    names = [name for name, _ in modules]
    if len(set(names)) != len(names):
        raise InvalidVmSpec("two kernel modules have the same file name")
    files = [
        ImageFile("bin/busybox", mode=0o755, data=busybox),
        *busybox_links(applets),
        ImageFile("init", mode=0o755, data=INITRAMFS_INIT.encode()),
        ImageFile("dev/console", Kind.CHAR_DEVICE, 0o600, device=(5, 1)),
        ImageFile("modules/order", data="".join(f"{n}\n" for n in names).encode()),
        *(ImageFile(f"modules/{name}", data=data) for name, data in modules),
    ]
    return with_directories(files, ("proc", "sys", "newroot", "tmp"))


def rootfs_files(busybox: bytes, applets: Sequence[str]) -> list[ImageFile]:
    """The root filesystem template: busybox and its links, the init and service scripts."""
    files = [
        ImageFile("bin/busybox", mode=0o755, data=busybox),
        ImageFile("sbin/init", mode=0o755, data=ROOT_INIT.encode()),
        ImageFile("etc/inittab", data=INITTAB.encode()),
        ImageFile("etc/hostname", data=b"overland-guest\n"),
        ImageFile("etc/resolv.conf"),
        ImageFile("etc/overland/netconf.sh", data=NETCONF_SH.encode()),
        ImageFile("etc/overland/workload.sh", mode=0o755, data=WORKLOAD_SH.encode()),
        ImageFile("etc/overland/echo.sh", mode=0o755, data=ECHO_SH.encode()),
        ImageFile("etc/overland/shutdown.sh", mode=0o755, data=SHUTDOWN_SH.encode()),
        ImageFile("etc/overland/probe.sh", mode=0o755, data=PROBE_SH.encode()),
        ImageFile("etc/acpi/PWRF/00000080", mode=0o755, data=POWER_BUTTON_SH.encode()),
    ]
    files += busybox_links(applets, exclude={f.path for f in files})
    empty = ("dev", "proc", "sys", "run", "tmp", "root", WORKLOAD_DIR.lstrip("/"))
    return with_directories(files, empty)
