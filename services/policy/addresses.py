"""Which IPv4 addresses a virtual subnet lets a VM own, and the gateway each subnet reserves (pure).

A virtual subnet's CA prefixes are its address space. In each prefix up to /30 the network and the
broadcast address are no host's, and the first host address is the distributed router's: Windows
Network Virtualization reserves it for the subnet's default gateway, and so does Overland. The
subnet's ``gateway_ip`` (by default the first host address of its first prefix) is reserved too,
wherever it lies. /31 and /32 prefixes have no network, broadcast or reserved first address (RFC
3021 point-to-point links and single hosts). Addresses are ints here: a bulk load checks every
record's CA, and int arithmetic is what keeps that cheap.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from overland.v1 import types_pb2

_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
_RESERVED = ipaddress.IPv4Network("240.0.0.0/4")
# A customer route's next hop that means "on-link" (no bind: ruff's S104 notwithstanding).
ON_LINK = "0.0.0.0"  # noqa: S104
# Address blocks no host or VM owns an address in, and what each is called in an error message.
NOT_UNICAST: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_THIS_NETWORK, "in 0.0.0.0/8 (this network)"),
    (_LOOPBACK, "a loopback address"),
    (_MULTICAST, "a multicast address"),
    (_RESERVED, "in 240.0.0.0/4 (reserved, with the broadcast address)"),
)


def unicast_problem(address: int) -> str:
    """Why an address is not one a host can own ("" when it can)."""
    for network, problem in NOT_UNICAST:
        if int(network.network_address) <= address <= int(network.broadcast_address):
            return problem
    return ""


def prefix_problem(network: ipaddress.IPv4Network) -> str:
    """Why a prefix cannot be a CA prefix: it overlaps a block no host owns addresses in ("" if not)."""
    for block, _ in NOT_UNICAST:
        if network.overlaps(block):
            return f"overlaps {block}, whose addresses are not unicast host addresses"
    return ""


def network_and_broadcast(network: ipaddress.IPv4Network) -> tuple[int, ...]:
    """The addresses of a prefix that are no host's: its network and broadcast address, up to /30."""
    if network.prefixlen >= 31:
        return ()
    return int(network.network_address), int(network.broadcast_address)


def first_host(network: ipaddress.IPv4Network) -> int:
    """The first host address of a prefix: the gateway's in WNV (the only address of a /32, the lower
    one of a /31)."""
    if network.prefixlen >= 31:
        return int(network.network_address)
    return int(network.network_address) + 1


def default_gateway(prefixes: list[ipaddress.IPv4Network]) -> str:
    """The gateway address of a subnet that names none: the first host address of its first prefix."""
    return str(ipaddress.IPv4Address(first_host(prefixes[0])))


def ipv4_int(address: str) -> int:
    """A canonical dotted quad as an int (no checks: the caller validated it)."""
    a, b, c, d = address.split(".")
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)


@dataclass(frozen=True)
class SubnetRule:
    """What a subnet allows a lookup record: CAs inside its prefixes and not reserved, and a MAC
    other than its gateway's. Build it once per subnet (``of``); ``ca_problem`` is per record."""

    vsid: int
    # (first, last, text) of each CA prefix.
    ranges: tuple[tuple[int, int, str], ...]
    # Network and broadcast addresses -> which; gateway addresses -> which.
    no_host: dict[int, str]
    gateway: dict[int, str]
    gateway_mac: str

    @classmethod
    def of(cls, subnet: types_pb2.VirtualSubnet) -> SubnetRule:
        networks = [ipaddress.IPv4Network(p) for p in subnet.ca_prefixes]
        no_host: dict[int, str] = {}
        gateway: dict[int, str] = {}
        for network in networks:
            if network.prefixlen <= 30:
                low, high = network_and_broadcast(network)
                no_host[low] = f"the network address of {network}"
                no_host[high] = f"the broadcast address of {network}"
                gateway[first_host(network)] = (
                    f"the first host address of {network}, reserved for the gateway"
                )
        if subnet.gateway_ip:
            gateway[ipv4_int(subnet.gateway_ip)] = f"the gateway address of VSID {subnet.vsid}"
        ranges = tuple((int(n.network_address), int(n.broadcast_address), str(n)) for n in networks)
        return cls(subnet.vsid, ranges, no_host, gateway, subnet.gateway_mac)

    def contains(self, address: int) -> bool:
        return any(first <= address <= last for first, last, _ in self.ranges)

    def ca_problem(self, ca: str) -> str:
        """Why ``ca`` (canonical) cannot be a VM's address in this subnet ("" when it can)."""
        address = ipv4_int(ca)
        if not self.contains(address):
            prefixes = ", ".join(text for _, _, text in self.ranges[:4])
            more = f" and {len(self.ranges) - 4} more" if len(self.ranges) > 4 else ""
            return f"{ca} is outside VSID {self.vsid}'s CA prefixes ({prefixes}{more})"
        why = self.no_host.get(address) or self.gateway.get(address)
        return f"{ca} is {why}" if why else ""

    def mac_problem(self, mac: str) -> str:
        """Why ``mac`` (canonical) cannot be a VM NIC's in this subnet ("" when it can)."""
        if mac == self.gateway_mac:
            return f"{mac} is the gateway MAC of VSID {self.vsid}"
        return ""

    def next_hop_problem(self, next_hop: str) -> str:
        """Why a route's next hop (canonical) cannot be used in this subnet: the network or broadcast
        address of one of its prefixes ("" otherwise; 0.0.0.0, on-link, is always fine)."""
        if next_hop == ON_LINK:
            return ""
        why = self.no_host.get(ipv4_int(next_hop))
        return f"{next_hop} is {why}" if why else ""
