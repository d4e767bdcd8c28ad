"""The pure core of MoveLookupRecords (services/policy/record_move.py), with hypothesis.

Over random tables (two VSIDs of one domain, records on two hosts, a host whose PA is not a
provider address) and random requests: the error is the one an independent oracle expects, in the
documented order (the request, the destination, then each move); otherwise the plan's compares all
hold on what it was planned from, it writes no key twice (etcd refuses that), it fits the size
``validate_moves`` promised, and applied to the table it moves exactly the requested records,
keeps the others, and keeps the MAC index naming each record's CA.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st

from overland.v1 import policy_pb2, types_pb2
from services.common.kv import Compare, CompareOp, CompareTarget, Delete, KeyValue, Put
from services.common.schema import encode_entry, keys, resource_from
from services.policy.errors import (
    InvalidPolicy,
    PolicyConflict,
    PolicyError,
    ResourceExists,
    ResourceNotFound,
)
from services.policy.record_move import (
    Destination,
    Move,
    MovePlan,
    missing_keys,
    plan_move,
    txn_size,
    validate_moves,
)

RDID = "8f7e0a50-0000-4000-8000-000000000001"
SUBNETS = {5001: "192.0.2.0/24", 5002: "198.51.100.0/24"}
PROVIDERS = ("198.18.0.1", "198.18.0.2")
HOSTS = {"h1": "198.18.0.1", "h2": "198.18.0.2", "stray": "198.18.0.3"}
MAX_OPS = 128


@dataclass
class Table:
    """A store as key -> KeyValue, with etcd's revisions."""

    kvs: dict[bytes, KeyValue]
    revision: int

    def put(self, key: bytes, value: bytes) -> None:
        self.revision += 1
        old = self.kvs.get(key)
        create = old.create_revision if old else self.revision
        self.kvs[key] = KeyValue(key, value, create, self.revision, (old.version if old else 0) + 1)

    def holds(self, compare: Compare) -> bool:
        found = self.kvs.get(compare.key)
        actual: int | bytes
        if compare.target is CompareTarget.VERSION:
            actual = found.version if found else 0
        elif compare.target is CompareTarget.MOD:
            actual = found.mod_revision if found else 0
        elif compare.target is CompareTarget.VALUE:
            if found is None:
                return False
            actual = found.value
        else:
            actual = found.create_revision if found else 0
        if compare.op is CompareOp.EQUAL:
            return actual == compare.operand
        assert compare.op is CompareOp.GREATER
        return actual > compare.operand  # type: ignore[operator]

    def records(self) -> dict[tuple[int, str], types_pb2.LookupRecord]:
        found = {}
        for key, kv in self.kvs.items():
            parsed = keys.parse_key(key)
            if parsed is not None and parsed.kind == keys.KIND_RECORD:
                stored = resource_from(kv, types_pb2.LookupRecord)
                stored.revision = 0
                found[parsed.vsid, parsed.ca] = stored
        return found


def encode(resource: types_pb2.LookupRecord) -> bytes:
    return encode_entry(resource, 1)


def build_table(placed: dict[tuple[int, int], int]) -> Table:
    """``placed``: (vsid, last octet) -> index of the provider the record is on."""
    table = Table({}, 0)
    for pa in PROVIDERS:
        table.put(
            keys.pa_key(pa),
            encode_entry(types_pb2.ProviderAddress(pa_ip=pa, host_name="h", prefix_length=24), 1),
        )
    for name, pa in HOSTS.items():
        table.put(keys.registration_key(name), encode_entry(types_pb2.Host(host_name=name, pa_ip=pa), 1))
    for vsid, prefix in SUBNETS.items():
        network = ipaddress.IPv4Network(prefix)
        subnet = types_pb2.VirtualSubnet(
            vsid=vsid, rdid=RDID, ca_prefixes=[prefix], gateway_ip=str(network[1])
        )
        table.put(keys.vsid_index_key(vsid), RDID.encode())
        table.put(keys.subnet_key(RDID, vsid), encode_entry(subnet, 1))
    for (vsid, octet), provider in placed.items():
        ca = str(ipaddress.IPv4Network(SUBNETS[vsid])[octet])
        mac = f"02:00:00:{vsid & 0xFF:02x}:00:{octet:02x}"
        stored = types_pb2.LookupRecord(ca=ca, vsid=vsid, mac=mac, pa=PROVIDERS[provider], rdid=RDID)
        table.put(keys.record_key(RDID, vsid, ca), encode(stored))
        table.put(keys.mac_index_key(vsid, mac), ca.encode())
    return table


def ca_in(vsid: int, octet: int) -> str:
    return str(ipaddress.IPv4Network(SUBNETS[vsid])[octet])


SLOTS = [(vsid, octet) for vsid in sorted(SUBNETS) for octet in range(2, 10)]
# Each slot empty or a record on one of the providers; most are full, so moves mostly find records.
tables = st.lists(st.sampled_from([None, 0, 1, 0, 1]), min_size=len(SLOTS), max_size=len(SLOTS)).map(
    lambda providers: {slot: p for slot, p in zip(SLOTS, providers, strict=True) if p is not None}
)
moves = st.lists(
    st.builds(
        lambda vsid, octet, new: policy_pb2.RecordMove(
            vsid=vsid,
            ca=ca_in(vsid, octet),
            new_ca="" if new is None else (ca_in(vsid, new) if new >= 0 else "203.0.113.9"),
        ),
        st.sampled_from(sorted(SUBNETS)),
        st.integers(2, 10),
        st.one_of(st.none(), st.none(), st.integers(-1, 12)),
    ),
    min_size=1,
    max_size=3,
)
destinations = st.sampled_from(
    [
        *({"host_name": name} for name in ("h1", "h2", "h1", "h2", "stray", "nowhere")),
        *({"pa": pa} for pa in ("198.18.0.1", "198.18.0.2", "198.18.0.1", "198.18.0.2", "198.18.0.3")),
    ]
)


def oracle(request: policy_pb2.MoveLookupRecordsRequest, table: Table) -> type[Exception] | None:
    """The error a request must get, from the rules as docs/policy.md states them."""
    pairs = [(m.vsid, m.ca, m.new_ca or m.ca) for m in request.moves]
    sources = [(vsid, ca) for vsid, ca, _ in pairs]
    targets = [(vsid, new) for vsid, _, new in pairs]
    if len(set(sources)) < len(sources) or len(set(targets)) < len(targets):
        return InvalidPolicy
    if any(new != ca and (vsid, new) in sources for vsid, ca, new in pairs):
        return InvalidPolicy
    pa = HOSTS.get(request.host_name) if request.host_name else request.pa
    if pa is None or pa not in PROVIDERS:
        return PolicyConflict
    records = table.records()
    for vsid, ca, new in pairs:
        if (vsid, ca) not in records:
            return ResourceNotFound
        if new != ca:
            network = ipaddress.IPv4Network(SUBNETS[vsid])
            # Inside the prefix, and not its network, gateway (first host) or broadcast address.
            if ipaddress.IPv4Address(new) not in network or new in (
                ca_in(vsid, 0),
                ca_in(vsid, 1),
                ca_in(vsid, -1),
            ):
                return PolicyConflict
            if (vsid, new) in records:
                return ResourceExists
    return None


Decision = tuple[list[Move], Destination, MovePlan]


def decide(request: policy_pb2.MoveLookupRecordsRequest, table: Table) -> Decision | PolicyError:
    """Validate, read what is missing from ``table`` until nothing is, and plan; or the error."""
    try:
        valid, where = validate_moves(request, MAX_OPS)
        state: dict[bytes, KeyValue | None] = {}
        while missing := missing_keys(valid, where, state):
            state.update((key, table.kvs.get(key)) for key in missing)
        return valid, where, plan_move(valid, where, state, encode)
    except PolicyError as error:
        return error


@settings(max_examples=500)
@given(tables, moves, destinations)
def test_a_plan_moves_exactly_the_records_asked_or_fails_as_the_oracle_says(
    placed: dict[tuple[int, int], int], wanted: list[policy_pb2.RecordMove], destination: dict[str, str]
) -> None:
    table = build_table(placed)
    request = policy_pb2.MoveLookupRecordsRequest(moves=wanted, **destination)
    expected = oracle(request, table)
    before = table.records()
    outcome = decide(request, table)
    event(type(outcome).__name__)
    if isinstance(outcome, Exception):
        assert type(outcome) is expected, f"{outcome}; expected {expected}"
        return
    valid, where, plan = outcome
    assert expected is None
    assert all(table.holds(compare) for compare in plan.compares)
    written = [op.key for op in plan.writes]
    assert len(written) == len(set(written))
    compares, writes = txn_size(valid, where)
    assert len(plan.compares) <= compares
    assert len(plan.writes) + 1 <= writes  # the table revision marker is the transaction's own
    for op in plan.writes:
        if isinstance(op, Put):
            table.put(op.key, op.value)
        else:
            assert isinstance(op, Delete)
            del table.kvs[op.key]
    after = table.records()
    pa = HOSTS[request.host_name] if request.host_name else request.pa
    moved = {(m.vsid, m.ca): m.new_ca or m.ca for m in wanted}
    expected_records = {}
    for (vsid, ca), stored in before.items():
        if (vsid, ca) in moved:
            stored.ca, stored.pa = moved[vsid, ca], pa
        expected_records[vsid, stored.ca] = stored
    assert after == expected_records
    assert [(r.vsid, r.ca, r.pa) for r in plan.records] == [(m.vsid, m.new_ca or m.ca, pa) for m in wanted]
    # The MAC index names each record's CA, and nothing else.
    index = {
        (parsed.vsid, parsed.mac): kv.value.decode()
        for kv in table.kvs.values()
        if (parsed := keys.parse_key(kv.key)) is not None and parsed.kind == keys.KIND_MAC_INDEX
    }
    assert index == {(vsid, stored.mac): ca for (vsid, ca), stored in after.items()}
