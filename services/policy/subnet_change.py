"""Whether a virtual subnet's new rule still admits what the subnet holds, at one revision.

Changing a subnet's CA prefixes, gateway address or gateway MAC can strand its lookup records (a CA
now outside every prefix, or now the gateway's) and routes (a next hop now a network or broadcast
address). ``stranded`` reads the subnet's records and routes at the revision the update decided on
and names what the new rule refuses; the update's transaction then compares that none of them was
written since (``guards``), so a record written meanwhile makes the update decide again.
"""

from __future__ import annotations

from collections.abc import Iterator

from overland.v1 import types_pb2
from services.common.errors import FieldViolation
from services.common.kv import KV, Compare, KeyValue
from services.common.schema import keys
from services.policy.addresses import SubnetRule
from services.policy.listing import SCAN_CHUNK
from services.policy.unreadable import UnreadableEntries

# How many stranded records or routes an error names (it says how many there are in all).
NAMED = 5


def rule_changes(stored: types_pb2.VirtualSubnet, wanted: types_pb2.VirtualSubnet) -> bool:
    """Whether an update changes what the subnet admits (a description change does not)."""
    return (list(stored.ca_prefixes), stored.gateway_ip, stored.gateway_mac) != (
        list(wanted.ca_prefixes),
        wanted.gateway_ip,
        wanted.gateway_mac,
    )


def _scan(kv: KV, prefix: bytes, revision: int) -> Iterator[KeyValue]:
    start: bytes | None = None
    while True:
        chunk = kv.range(prefix, start=start, limit=SCAN_CHUNK, revision=revision)
        yield from chunk.kvs
        if not chunk.more or not chunk.kvs:
            return
        start = chunk.kvs[-1].key + b"\0"


def stranded(
    kv: KV, wanted: types_pb2.VirtualSubnet, revision: int, unreadable: UnreadableEntries
) -> list[FieldViolation]:
    """What the subnet ``wanted`` would no longer admit of what it holds at ``revision``: a
    violation per kind (records, routes) naming the first few. Unreadable values are skipped."""
    rule = SubnetRule.of(wanted)
    found: list[FieldViolation] = []
    problems = []
    for stored in _scan(kv, keys.records_prefix(wanted.rdid, wanted.vsid), revision):
        record = unreadable.read(stored, types_pb2.LookupRecord, "subnet-update")
        if record is None:
            continue
        problem = rule.ca_problem(record.ca) or rule.mac_problem(record.mac)
        if problem:
            problems.append(problem)
    if problems:
        found.append(FieldViolation("virtual_subnet", _summary(problems, "lookup records")))
    problems = []
    for stored in _scan(kv, keys.routes_prefix(wanted.rdid, wanted.vsid), revision):
        route = unreadable.read(stored, types_pb2.CustomerRoute, "subnet-update")
        problem = rule.next_hop_problem(route.next_hop) if route is not None else ""
        if problem:
            problems.append(problem)
    if problems:
        found.append(FieldViolation("virtual_subnet", _summary(problems, "customer routes")))
    return found


def _summary(problems: list[str], what: str) -> str:
    more = f"; and {len(problems) - NAMED} more" if len(problems) > NAMED else ""
    return f"{len(problems)} {what} would not fit: " + "; ".join(problems[:NAMED]) + more


def guards(subnet: types_pb2.VirtualSubnet, revision: int) -> list[Compare]:
    """Compares that no record or route of the subnet was written after ``revision``."""
    return [
        Compare.unchanged_since(keys.records_prefix(subnet.rdid, subnet.vsid), revision),
        Compare.unchanged_since(keys.routes_prefix(subnet.rdid, subnet.vsid), revision),
    ]
