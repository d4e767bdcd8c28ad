"""Pure validation and normalization of policy resources (no I/O).

Each ``validate_*`` function returns a normalized copy of its resource (lowercase MACs, canonical
IPs and prefixes, enum defaults filled in) or raises ``InvalidPolicy`` listing every bad field as
a BadRequest field violation with its path (``lookup_record.mac``). Checks that need the table's
state (unknown PA, overlapping subnets) live in the store, but their pure parts are here too.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from overland.defaults import MAX_VSID, MIN_VSID
from overland.v1 import types_pb2
from services.common.errors import FieldViolation, bounded_violations, excerpt
from services.policy.addresses import (
    ON_LINK,
    default_gateway,
    network_and_broadcast,
    prefix_problem,
    unicast_problem,
)
from services.policy.errors import InvalidPolicy, PolicyConflict

# The API's size limits (policy.proto and docs/policy.md say the same): a longer value is refused
# before anything else looks at it, and an error message quotes at most ``excerpt`` of it.
MAX_NAME_LENGTH = 256  # host_name, tenant_name, vm_name
MAX_DESCRIPTION_LENGTH = 1024
MAX_CA_PREFIXES = 64
# IPv4 addresses, prefixes, MACs and routing domain IDs (a UUID is 36 characters).
MAX_ADDRESS_LENGTH = 64
MAX_REPORTED_VIOLATIONS = 50

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
# Host and tenant names end up in keys and log lines: no separators, controls or blanks.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Violations:
    """Collects field violations so that one response names every bad field, not just the first."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def shown(self) -> list[FieldViolation]:
        """The violations a response carries: they travel in a trailer, which gRPC keeps small (the
        first 50, as many of them as fit ``errors.MAX_VIOLATIONS_BYTES``)."""
        return bounded_violations(tuple(self.items[:MAX_REPORTED_VIOLATIONS]))

    def raise_if_any(self, what: str) -> None:
        if self.items:
            fields = ", ".join(v.field for v in self.shown())
            more = len(self.items) - len(self.shown())
            raise InvalidPolicy(
                f"invalid {what}: {fields}" + (f" and {more} more" if more else ""), self.shown()
            )


def check_vsid(value: int, field: str, violations: Violations) -> int:
    if not MIN_VSID <= value <= MAX_VSID:
        if value < MIN_VSID or value == 0xFFFFFF:
            reason = "is reserved (0x000000-0x000FFF and 0xFFFFFF, RFC 7637)"
        else:
            reason = "does not fit the 24-bit GRE key"
        violations.add(field, f"VSID {value} {reason}; valid VSIDs are {MIN_VSID}..{MAX_VSID}")
    return value


def too_long(value: str, limit: int, field: str, violations: Violations) -> bool:
    """Whether ``value`` is over ``limit`` characters (recorded as a violation that quotes none of it)."""
    if len(value) <= limit:
        return False
    violations.add(field, f"{len(value)} characters, over the limit of {limit}")
    return True


def check_ipv4(value: str, field: str, violations: Violations, *, required: bool = True) -> str:
    """The canonical dotted quad, or "" when ``value`` is bad (the violation is recorded)."""
    if not value:
        if required:
            violations.add(field, "required: an IPv4 address")
        return ""
    if too_long(value, MAX_ADDRESS_LENGTH, field, violations):
        return ""
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        violations.add(field, f"{excerpt(value)} is not an IPv4 address")
        return ""
    return str(address)


def check_unicast_ipv4(value: str, field: str, violations: Violations) -> str:
    """An address a host or VM can own: not multicast, broadcast, unspecified, loopback or reserved
    (``addresses.unicast_problem``)."""
    address = check_ipv4(value, field, violations)
    if address:
        problem = unicast_problem(int(ipaddress.IPv4Address(address)))
        if problem:
            violations.add(field, f"{address} is {problem}, not a unicast host address")
            return ""
    return address


def check_mac(value: str, field: str, violations: Violations, *, required: bool = True) -> str:
    """``aa:bb:cc:dd:ee:ff`` in lowercase (``-`` separators are accepted), unicast and not zero."""
    if not value:
        if required:
            violations.add(field, "required: a MAC address aa:bb:cc:dd:ee:ff")
        return ""
    if too_long(value, MAX_ADDRESS_LENGTH, field, violations):
        return ""
    lowered = value.strip().lower()
    if not _MAC_RE.match(lowered):
        violations.add(field, f"{excerpt(value)} is not a MAC address aa:bb:cc:dd:ee:ff")
        return ""
    mac = lowered.replace("-", ":")
    if int(mac[:2], 16) & 1:
        violations.add(field, f"{mac} is a multicast MAC; a NIC needs a unicast one")
        return ""
    if mac == "00:00:00:00:00:00":
        violations.add(field, "the all-zero MAC is not a NIC address")
        return ""
    return mac


def check_prefix(value: str, field: str, violations: Violations) -> str:
    """A canonical IPv4 CIDR prefix with no host bits set, or "" when bad."""
    if not value:
        violations.add(field, "required: an IPv4 CIDR prefix such as 192.0.2.0/24")
        return ""
    if too_long(value, MAX_ADDRESS_LENGTH, field, violations):
        return ""
    text = value.strip()
    if "/" not in text:
        violations.add(field, f"{excerpt(value)} has no prefix length; write it as a.b.c.d/len")
        return ""
    try:
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        violations.add(field, f"{excerpt(value)} is not an IPv4 CIDR prefix")
        return ""
    if network.network_address != ipaddress.IPv4Address(text.partition("/")[0]):
        violations.add(field, f"{excerpt(value)} has host bits set; did you mean {network}?")
        return ""
    return str(network)


def check_rdid(value: str, field: str, violations: Violations, *, required: bool = True) -> str:
    """The canonical lowercase UUID, or "" when bad or missing."""
    if not value:
        if required:
            violations.add(field, "required: a routing domain ID (UUID)")
        return ""
    if too_long(value, MAX_ADDRESS_LENGTH, field, violations):
        return ""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        violations.add(field, f"{excerpt(value)} is not a UUID")
        return ""


def check_name(value: str, field: str, violations: Violations, *, required: bool) -> str:
    if too_long(value, MAX_NAME_LENGTH, field, violations):
        return ""
    name = value.strip()
    if not name:
        if required:
            violations.add(field, "required")
        return ""
    if not _NAME_RE.match(name):
        violations.add(
            field,
            f"{excerpt(value)} is not a name: letters, digits, '.', '_' and '-', "
            f"at most {MAX_NAME_LENGTH} characters",
        )
        return ""
    return name


def check_description(value: str, field: str, violations: Violations) -> str:
    too_long(value, MAX_DESCRIPTION_LENGTH, field, violations)
    return value


def _check_free_text_name(value: str, field: str, violations: Violations, *, required: bool) -> str:
    """Tenant and VM names are shown to people, so spaces are fine, but not control characters."""
    if too_long(value, MAX_NAME_LENGTH, field, violations):
        return ""
    name = value.strip()
    if not name:
        if required:
            violations.add(field, "required")
        return ""
    if _CONTROL.search(name):
        violations.add(
            field, f"control characters are not allowed; at most {MAX_NAME_LENGTH} printable characters"
        )
        return ""
    return name


def validate_routing_domain(
    domain: types_pb2.RoutingDomain, field: str = "routing_domain", *, rdid_required: bool = True
) -> types_pb2.RoutingDomain:
    violations = Violations()
    rdid = check_rdid(domain.rdid, f"{field}.rdid", violations, required=rdid_required)
    tenant = _check_free_text_name(domain.tenant_name, f"{field}.tenant_name", violations, required=True)
    description = check_description(domain.description, f"{field}.description", violations)
    violations.raise_if_any("routing domain")
    return types_pb2.RoutingDomain(rdid=rdid, tenant_name=tenant, description=description)


def default_gateway_mac(vsid: int) -> str:
    """A locally administered unicast MAC unique per VSID: 02:4f:4c ("OL") then the 24-bit VSID."""
    return "02:4f:4c:" + ":".join(f"{(vsid >> shift) & 0xFF:02x}" for shift in (16, 8, 0))


def validate_virtual_subnet(
    subnet: types_pb2.VirtualSubnet, field: str = "virtual_subnet"
) -> types_pb2.VirtualSubnet:
    violations = Violations()
    vsid = check_vsid(subnet.vsid, f"{field}.vsid", violations)
    rdid = check_rdid(subnet.rdid, f"{field}.rdid", violations)
    prefixes: list[str] = []
    if not subnet.ca_prefixes:
        violations.add(f"{field}.ca_prefixes", "required: at least one CA prefix")
    elif len(subnet.ca_prefixes) > MAX_CA_PREFIXES:
        violations.add(f"{field}.ca_prefixes", f"at most {MAX_CA_PREFIXES} prefixes")
    else:
        for index, text in enumerate(subnet.ca_prefixes):
            prefix = check_prefix(text, f"{field}.ca_prefixes[{index}]", violations)
            problem = prefix and prefix_problem(ipaddress.IPv4Network(prefix))
            if problem:
                violations.add(f"{field}.ca_prefixes[{index}]", f"{prefix} {problem}")
            elif prefix:
                prefixes.append(prefix)
        for index, other in overlapping_pairs(prefixes):
            violations.add(f"{field}.ca_prefixes[{index}]", f"{prefixes[index]} overlaps {prefixes[other]}")
    gateway_ip = check_ipv4(subnet.gateway_ip, f"{field}.gateway_ip", violations, required=False)
    if prefixes and len(prefixes) == len(subnet.ca_prefixes):
        networks = [ipaddress.IPv4Network(p) for p in prefixes]
        if not gateway_ip:
            if not subnet.gateway_ip:
                gateway_ip = default_gateway(networks)
        else:
            _check_gateway(gateway_ip, networks, f"{field}.gateway_ip", violations)
    gateway_mac = check_mac(subnet.gateway_mac, f"{field}.gateway_mac", violations, required=False)
    if not subnet.gateway_mac:
        gateway_mac = default_gateway_mac(vsid)
    description = check_description(subnet.description, f"{field}.description", violations)
    violations.raise_if_any("virtual subnet")
    return types_pb2.VirtualSubnet(
        vsid=vsid,
        rdid=rdid,
        ca_prefixes=prefixes,
        gateway_ip=gateway_ip,
        gateway_mac=gateway_mac,
        description=description,
    )


def _check_gateway(
    gateway_ip: str, networks: Sequence[ipaddress.IPv4Network], field: str, violations: Violations
) -> None:
    """A gateway address is a host address of one of the subnet's CA prefixes."""
    address = ipaddress.IPv4Address(gateway_ip)
    inside = [n for n in networks if address in n]
    if not inside:
        violations.add(field, f"{gateway_ip} is in none of the subnet's CA prefixes")
    elif int(address) in network_and_broadcast(inside[0]):
        violations.add(field, f"{gateway_ip} is the network or broadcast address of {inside[0]}")


def overlapping_pairs(prefixes: Sequence[str]) -> list[tuple[int, int]]:
    """``(i, j)`` with ``i > j`` for each prefix ``i`` that overlaps an earlier prefix ``j``."""
    networks = [ipaddress.IPv4Network(p) for p in prefixes]
    return [(i, j) for i in range(len(networks)) for j in range(i) if networks[i].overlaps(networks[j])]


def subnet_overlaps(
    subnet: types_pb2.VirtualSubnet,
    others: Iterable[types_pb2.VirtualSubnet],
    field: str = "virtual_subnet",
) -> None:
    """Raise ``PolicyConflict`` when ``subnet`` overlaps another subnet of its routing domain."""
    violations = Violations()
    mine = [ipaddress.IPv4Network(p) for p in subnet.ca_prefixes]
    for other in others:
        if other.vsid == subnet.vsid:
            continue
        for index, network in enumerate(mine):
            for theirs in other.ca_prefixes:
                if network.overlaps(ipaddress.IPv4Network(theirs)):
                    violations.add(
                        f"{field}.ca_prefixes[{index}]",
                        f"{network} overlaps {theirs} of VSID {other.vsid} in the same routing domain",
                    )
    if violations.items:
        raise PolicyConflict(
            f"virtual subnet {subnet.vsid} overlaps another subnet of routing domain {subnet.rdid}",
            violations.shown(),
        )


def validate_provider_address(
    address: types_pb2.ProviderAddress, field: str = "provider_address"
) -> types_pb2.ProviderAddress:
    violations = Violations()
    host = check_name(address.host_name, f"{field}.host_name", violations, required=True)
    pa_ip = check_unicast_ipv4(address.pa_ip, f"{field}.pa_ip", violations)
    if not 1 <= address.prefix_length <= 32:
        violations.add(f"{field}.prefix_length", f"{address.prefix_length} is not a prefix length 1..32")
    elif pa_ip:
        network = ipaddress.IPv4Network((pa_ip, address.prefix_length), strict=False)
        if int(ipaddress.IPv4Address(pa_ip)) in network_and_broadcast(network):
            violations.add(f"{field}.pa_ip", f"{pa_ip} is the network or broadcast address of {network}")
    if address.vlan_id > 4094:
        violations.add(f"{field}.vlan_id", f"{address.vlan_id} is not a VLAN ID 1..4094 (0: untagged)")
    violations.raise_if_any("provider address")
    return types_pb2.ProviderAddress(
        host_name=host, pa_ip=pa_ip, prefix_length=address.prefix_length, vlan_id=address.vlan_id
    )


_RULES = frozenset(types_pb2.LookupRule.values()) - {types_pb2.LOOKUP_RULE_UNSPECIFIED}
_TYPES = frozenset(types_pb2.LookupType.values()) - {types_pb2.LOOKUP_TYPE_UNSPECIFIED}


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@lru_cache(maxsize=4096)
def _plain_unicast(address: str) -> bool:
    """Canonical and clearly a host address (memoized: a bulk load names few PAs, many times)."""
    if not _CANONICAL_IPV4.fullmatch(address):
        return False
    first_octet = int(address[: address.index(".")])
    return first_octet not in (0, 127) and first_octet < 224


def canonical_record(
    record: types_pb2.LookupRecord, *, in_place: bool = False
) -> types_pb2.LookupRecord | None:
    """The normalized record when every field is already canonical and plainly valid (what bulk
    loads send), without building any violation; None sends it through the full check, which
    accepts at least everything this accepts and normalizes it the same way. ``in_place``
    normalizes ``record`` itself instead of a copy (a bulk stream's records are the server's own)."""
    ca, pa, vm_name = record.ca, record.pa, record.vm_name
    mac = record.mac.lower()
    if not (_plain_unicast(ca) and _CANONICAL_MAC.fullmatch(mac) and _plain_unicast(pa)):
        return None
    if int(mac[1], 16) & 1 or mac == "00:00:00:00:00:00":
        return None
    if not MIN_VSID <= record.vsid <= MAX_VSID:
        return None
    if vm_name and (len(vm_name) > MAX_NAME_LENGTH or vm_name != vm_name.strip() or _CONTROL.search(vm_name)):
        return None
    rule = record.rule or types_pb2.LOOKUP_RULE_ENCAP
    kind = record.type or types_pb2.LOOKUP_TYPE_STATIC
    if rule not in _RULES or kind not in _TYPES:
        return None
    if not in_place:
        return types_pb2.LookupRecord(
            ca=ca, vsid=record.vsid, mac=mac, pa=pa, vm_name=vm_name, rule=rule, type=kind, rdid=record.rdid
        )
    # What the copy would leave out: the output-only revision and fields this server does not know.
    record.DiscardUnknownFields()
    if record.revision:
        record.revision = 0
    if record.mac != mac:
        record.mac = mac
    record.rule, record.type = rule, kind
    return record


def validate_lookup_record(
    record: types_pb2.LookupRecord, field: str = "lookup_record", *, in_place: bool = False
) -> types_pb2.LookupRecord:
    """The record with CA, MAC and PA canonical and rule/type defaulted (ENCAP, STATIC); see
    ``canonical_record`` for ``in_place``."""
    canonical = canonical_record(record, in_place=in_place)
    return canonical if canonical is not None else checked_record(record, field)


def checked_record(record: types_pb2.LookupRecord, field: str = "lookup_record") -> types_pb2.LookupRecord:
    """The full check of a lookup record, naming every bad field."""
    violations = Violations()
    ca = check_unicast_ipv4(record.ca, f"{field}.ca", violations)
    vsid = check_vsid(record.vsid, f"{field}.vsid", violations)
    mac = check_mac(record.mac, f"{field}.mac", violations)
    pa = check_unicast_ipv4(record.pa, f"{field}.pa", violations)
    vm_name = _check_free_text_name(record.vm_name, f"{field}.vm_name", violations, required=False)
    rule = record.rule or types_pb2.LOOKUP_RULE_ENCAP
    if rule not in _RULES:
        violations.add(f"{field}.rule", f"{record.rule} is not a LookupRule")
    kind = record.type or types_pb2.LOOKUP_TYPE_STATIC
    if kind not in _TYPES:
        violations.add(f"{field}.type", f"{record.type} is not a LookupType")
    violations.raise_if_any("lookup record")
    return types_pb2.LookupRecord(
        ca=ca, vsid=vsid, mac=mac, pa=pa, vm_name=vm_name, rule=rule, type=kind, rdid=record.rdid
    )


def validate_record_id(vsid: int, ca: str, field: str = "") -> tuple[int, str]:
    """The (vsid, ca) identity of a record, as Get and Delete name it."""
    violations = Violations()
    check_vsid(vsid, field_path(field, "vsid"), violations)
    canonical = check_ipv4(ca, field_path(field, "ca"), violations)
    violations.raise_if_any("lookup record identity")
    return vsid, canonical


def validate_customer_route(
    route: types_pb2.CustomerRoute, field: str = "customer_route"
) -> types_pb2.CustomerRoute:
    violations = Violations()
    rdid = check_rdid(route.rdid, field_path(field, "rdid"), violations)
    vsid = check_vsid(route.vsid, field_path(field, "vsid"), violations)
    prefix = check_prefix(route.destination_prefix, field_path(field, "destination_prefix"), violations)
    next_hop = check_ipv4(route.next_hop, field_path(field, "next_hop"), violations)
    if next_hop and next_hop != ON_LINK:
        problem = unicast_problem(int(ipaddress.IPv4Address(next_hop)))
        if problem:
            violations.add(
                field_path(field, "next_hop"),
                f"{next_hop} is {problem}; a next hop is a host (or 0.0.0.0: on-link)",
            )
    violations.raise_if_any("customer route")
    return types_pb2.CustomerRoute(
        rdid=rdid, vsid=vsid, destination_prefix=prefix, next_hop=next_hop, metric=route.metric
    )


def validate_route_id(
    rdid: str, vsid: int, destination_prefix: str, next_hop: str
) -> types_pb2.CustomerRoute:
    """The identity of a route (rdid, vsid, prefix, next hop), as Get and Delete name it."""
    return validate_customer_route(
        types_pb2.CustomerRoute(
            rdid=rdid, vsid=vsid, destination_prefix=destination_prefix, next_hop=next_hop
        ),
        field="",
    )


def immutable(field: str, stored: object, requested: object, violations: Violations) -> None:
    """An update may leave an immutable field empty (meaning "unchanged") but not change it."""
    if requested and requested != stored:
        violations.add(
            field, f"immutable: stored {excerpt(str(stored))}, requested {excerpt(str(requested))}"
        )


def field_path(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def check_ids_exclusive(values: Mapping[str, object], violations: Violations) -> None:
    """At most one of several optional filters may be set."""
    chosen = [name for name, value in values.items() if value]
    if len(chosen) > 1:
        for name in chosen:
            violations.add(name, f"set at most one of {', '.join(values)}")
