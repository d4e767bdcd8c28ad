"""A guest's network settings as a typed value, and their encoding on the guest kernel's command line.

The Debian kernel has no ``ip=`` autoconfiguration, so the guest's ``/sbin/init`` reads Overland's own
parameters from ``/proc/cmdline`` (the parser is ``NETCONF_SH`` in ``services.replica.vm.scripts``).
The grammar, for NIC number ``N`` (decimal, no leading zero, below ``MAX_NICS``)::

    overland.nicN.mac=MAC                  the NIC's MAC, lower-case hex with colons (required)
    overland.nicN.ip=ADDR/LEN[,ADDR/LEN]   its IPv4 addresses with prefix lengths (optional)
    overland.nicN.gw=ADDR                  a default route through this NIC (optional)
    overland.nicN.dns=ADDR[,ADDR]          name servers, written to /etc/resolv.conf (optional)

Words that do not match are ignored and a later word overrides an earlier one, as the shell parser
does; ``decode_network`` is the same grammar in Python. The whole command line must fit the x86
kernel's ``COMMAND_LINE_SIZE``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from services.common.errors import FieldViolation
from services.replica.vm.errors import InvalidVmSpec

PREFIX = "overland.nic"
FIELDS = ("mac", "ip", "gw", "dns")
MAX_NICS = 8
MAX_ADDRESSES = 16
MAX_DNS = 4
# The x86 kernel keeps 2048 bytes of command line, its terminating NUL included.
COMMAND_LINE_SIZE = 2048
# What every Overland guest boots with: the console on the first serial port (the runtime logs it),
# and a panic ends the VM (with qemu's -no-reboot) instead of hanging it.
BASE_PARAMETERS = ("console=ttyS0", "panic=-1")
BREAK_POINTS = ("initramfs",)
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
WORD_PATTERN = re.compile(r"^overland\.nic(0|[1-9][0-9]*)\.([a-z]+)=(.*)$", re.DOTALL)


@dataclass(frozen=True)
class NicSettings:
    """One NIC's settings inside the guest: its MAC (which finds the interface), addresses, gateway, DNS."""

    mac: str
    addresses: tuple[IPv4Interface, ...] = ()
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()

    @classmethod
    def parse(
        cls,
        mac: str,
        addresses: Iterable[str] = (),
        gateway: str | None = None,
        dns: Iterable[str] = (),
        field: str = "nic",
    ) -> NicSettings:
        """Settings from text (``"192.0.2.10/24"``); bad values raise ``InvalidVmSpec`` naming ``field``."""
        try:
            nic = cls(
                mac=mac.lower(),
                addresses=tuple(IPv4Interface(a) for a in addresses),
                gateway=IPv4Address(gateway) if gateway else None,
                dns=tuple(IPv4Address(d) for d in dns),
            )
        except ValueError as error:
            raise InvalidVmSpec(f"{field}: {error}", [FieldViolation(field, str(error))]) from error
        check_nic(nic, field)
        return nic


@dataclass(frozen=True)
class GuestNetwork:
    """Every NIC of a guest, in the order the guest numbers them (``nic0`` first)."""

    nics: tuple[NicSettings, ...] = ()


def _invalid(field: str, message: str) -> InvalidVmSpec:
    return InvalidVmSpec(f"{field}: {message}", [FieldViolation(field, message)])


def check_nic(nic: NicSettings, field: str = "nic") -> None:
    """Raise ``InvalidVmSpec`` unless the guest can apply ``nic`` as given."""
    if not MAC_PATTERN.match(nic.mac):
        raise _invalid(f"{field}.mac", f"{nic.mac!r} is not a lower-case MAC like 52:54:00:12:34:56")
    if int(nic.mac[:2], 16) & 1 or nic.mac == "00:00:00:00:00:00":
        raise _invalid(f"{field}.mac", f"{nic.mac} is a multicast or null MAC")
    if len(nic.addresses) > MAX_ADDRESSES:
        raise _invalid(f"{field}.addresses", f"at most {MAX_ADDRESSES} addresses per NIC")
    if len({a.ip for a in nic.addresses}) != len(nic.addresses):
        raise _invalid(f"{field}.addresses", "an address is given twice")
    for address in nic.addresses:
        network = address.network
        if network.prefixlen == 0:
            raise _invalid(f"{field}.addresses", f"{address} has a zero prefix length")
        # /31 and /32 have no network or broadcast address to avoid (RFC 3021).
        if network.prefixlen < 31 and address.ip in (network.network_address, network.broadcast_address):
            raise _invalid(f"{field}.addresses", f"{address} is the network or broadcast address")
    if nic.gateway is not None:
        if not any(nic.gateway in a.network for a in nic.addresses):
            raise _invalid(f"{field}.gateway", f"{nic.gateway} is in none of the NIC's subnets")
        if any(nic.gateway == a.ip for a in nic.addresses):
            raise _invalid(f"{field}.gateway", f"{nic.gateway} is the NIC's own address")
    if len(nic.dns) > MAX_DNS:
        raise _invalid(f"{field}.dns", f"at most {MAX_DNS} name servers per NIC")


def check_network(network: GuestNetwork) -> None:
    """Raise ``InvalidVmSpec`` unless every NIC is valid and the MACs are distinct."""
    if len(network.nics) > MAX_NICS:
        raise _invalid("nics", f"at most {MAX_NICS} NICs")
    for index, nic in enumerate(network.nics):
        check_nic(nic, f"nics[{index}]")
    macs = [nic.mac for nic in network.nics]
    if len(set(macs)) != len(macs):
        raise _invalid("nics", "two NICs have the same MAC")


def encode_network(network: GuestNetwork) -> list[str]:
    """The kernel command-line words that carry ``network`` (empty fields are left out)."""
    check_network(network)
    words = []
    for index, nic in enumerate(network.nics):
        words.append(f"{PREFIX}{index}.mac={nic.mac}")
        if nic.addresses:
            words.append(f"{PREFIX}{index}.ip={','.join(a.with_prefixlen for a in nic.addresses)}")
        if nic.gateway is not None:
            words.append(f"{PREFIX}{index}.gw={nic.gateway}")
        if nic.dns:
            words.append(f"{PREFIX}{index}.dns={','.join(map(str, nic.dns))}")
    return words


def decode_network(command_line: str) -> GuestNetwork:
    """The settings a guest reads from ``command_line`` (the grammar in this module's docstring)."""
    found: dict[int, dict[str, str]] = {}
    for word in command_line.split():
        match = WORD_PATTERN.match(word)
        if match is None or match.group(2) not in FIELDS:
            continue
        found.setdefault(int(match.group(1)), {})[match.group(2)] = match.group(3)
    nics = []
    for index in sorted(found):
        fields = found[index]
        field = f"{PREFIX}{index}"
        if "mac" not in fields:
            raise _invalid(field, "has no mac")
        nics.append(
            NicSettings.parse(
                fields["mac"],
                split_list(fields.get("ip", "")),
                fields.get("gw") or None,
                split_list(fields.get("dns", "")),
                field=field,
            )
        )
    network = GuestNetwork(tuple(nics))
    check_network(network)
    return network


def split_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def kernel_command_line(
    network: GuestNetwork, *, break_at: str | None = None, extra: Sequence[str] = ()
) -> str:
    """The guest's whole kernel command line: the base parameters, ``network`` and ``extra`` words.

    ``break_at="initramfs"`` makes the initramfs power the VM off as soon as it runs (a boot without a
    root disk: the accelerator probe and the boot-time baseline use it).
    """
    words = [*BASE_PARAMETERS, *encode_network(network)]
    if break_at is not None:
        if break_at not in BREAK_POINTS:
            raise _invalid("break_at", f"must be one of {BREAK_POINTS}")
        words.append(f"overland.break={break_at}")
    for word in extra:
        if not word or any(c.isspace() or c == '"' for c in word):
            raise _invalid("extra", f"{word!r} is not a single kernel command-line word")
        words.append(word)
    line = " ".join(words)
    if len(line.encode()) >= COMMAND_LINE_SIZE:
        raise _invalid(
            "append", f"the kernel command line is {len(line)} bytes, over {COMMAND_LINE_SIZE - 1}"
        )
    return line
