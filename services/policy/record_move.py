"""MoveLookupRecords: lookup records (a VM's NICs) moved to another host in one etcd transaction.

Pure core, thin shell. ``validate_moves`` checks a request alone, including that its transaction fits
the store's ops limit (``txn_size``), so a request that could never commit is refused before anything
is read. ``missing_keys`` names what the decision still has to read (the destination host's
registration, each VSID's routing domain and subnet, each record, each new CA's key, the MAC index
entry of each record whose CA changes), and ``plan_move`` decides over what was read: the compares
that guard every one of those reads and the writes of the move, or a typed error naming the request
field at fault. ``RecordMover`` reads (everything at one revision), plans and commits, and decides
again when a compare shows that another writer got there first. A failed move writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from overland.v1 import policy_pb2, types_pb2
from services.common.errors import FieldViolation
from services.common.kv import Compare, Delete, Get, KeyValue, Op, Put
from services.common.schema import keys, resource_from
from services.policy import validation
from services.policy.addresses import SubnetRule
from services.policy.errors import (
    InvalidPolicy,
    PolicyConflict,
    ResourceExists,
    ResourceNotFound,
    StaleRevision,
)
from services.policy.hosts import valid_host_name
from services.policy.txns import TableTxns


@dataclass(frozen=True)
class Move:
    """One validated record move; ``new_ca`` equals ``ca`` when the CA stays."""

    vsid: int
    ca: str
    new_ca: str
    expected_revision: int
    field: str

    @property
    def changes_ca(self) -> bool:
        return self.new_ca != self.ca


@dataclass(frozen=True)
class Destination:
    """Where the records go: a host's registered PA (``host_name``) or a PA given as it is."""

    host_name: str = ""
    pa: str = ""

    @property
    def field(self) -> str:
        return "host_name" if self.host_name else "pa"


def txn_size(moves: Sequence[Move], destination: Destination) -> tuple[int, int]:
    """The compares and the writes of the move's transaction at most: per VSID its routing domain
    and subnet; per record its own revision, and for a new CA that key's absence and the MAC index
    entry; the destination PA and registration. Writes: per record a put, for a new CA also the old
    key's delete and the MAC index put; the PA's reference touch and the table revision marker."""
    vsids = len({move.vsid for move in moves})
    new_cas = sum(move.changes_ca for move in moves)
    compares = 2 * vsids + len(moves) + 2 * new_cas + 1 + bool(destination.host_name)
    writes = len(moves) + 2 * new_cas + 2
    return compares, writes


def validate_moves(
    request: policy_pb2.MoveLookupRecordsRequest, max_ops: int
) -> tuple[list[Move], Destination]:
    """The request's moves and destination, or InvalidPolicy naming every bad field."""
    violations = validation.Violations()
    moves: list[Move] = []
    if not request.moves:
        violations.add("moves", "required: at least one record")
    sources: dict[tuple[int, str], str] = {}
    targets: dict[tuple[int, str], str] = {}
    for index, wanted in enumerate(request.moves):
        path = f"moves[{index}]"
        vsid = validation.check_vsid(wanted.vsid, f"{path}.vsid", violations)
        ca = validation.check_ipv4(wanted.ca, f"{path}.ca", violations)
        new_ca = (
            validation.check_unicast_ipv4(wanted.new_ca, f"{path}.new_ca", violations)
            if wanted.new_ca
            else ca
        )
        if wanted.expected_revision < 0:
            violations.add(f"{path}.expected_revision", "must not be negative")
        if not ca or not new_ca:
            continue
        if (vsid, ca) in sources:
            violations.add(f"{path}.ca", f"{sources[vsid, ca]} moves the same record")
        elif (vsid, new_ca) in targets:
            violations.add(f"{path}.new_ca", f"{targets[vsid, new_ca]} moves a record to the same CA")
        sources[vsid, ca] = path
        targets[vsid, new_ca] = path
        moves.append(Move(vsid, ca, new_ca, wanted.expected_revision, path))
    for move in moves:
        # A record may not take a CA that another record of the request leaves: etcd refuses a
        # transaction that writes one key twice, and a swap is two moves.
        if move.changes_ca and (move.vsid, move.new_ca) in sources:
            violations.add(
                f"{move.field}.new_ca", f"{move.new_ca} is moved by {sources[move.vsid, move.new_ca]}"
            )
    scope = request.WhichOneof("destination")
    destination = Destination()
    if scope == "host_name":
        try:
            destination = Destination(host_name=valid_host_name(request.host_name))
        except InvalidPolicy as error:
            violations.items.extend(error.violations)
    elif scope == "pa":
        destination = Destination(pa=validation.check_unicast_ipv4(request.pa, "pa", violations))
    else:
        violations.add("destination", "required: host_name or pa")
    if moves and not violations.items:
        compares, writes = txn_size(moves, destination)
        if max(compares, writes) > max_ops:
            violations.add(
                "moves",
                f"{len(moves)} records need {compares} compares and {writes} writes, more than one "
                f"transaction takes ({max_ops}); move fewer records at once",
            )
    violations.raise_if_any("record move")
    return moves, destination


State = Mapping[bytes, KeyValue | None]


def _rdid(state: State, vsid: int) -> str | None:
    index = state.get(keys.vsid_index_key(vsid))
    return index.value.decode() if index is not None else None


def _record(state: State, key: bytes) -> types_pb2.LookupRecord | None:
    found = state.get(key)
    return resource_from(found, types_pb2.LookupRecord) if found is not None else None


def destination_pa(destination: Destination, state: State) -> str | None:
    """The PA the records go to; ``None`` while the destination's registration is not read yet."""
    if destination.pa:
        return destination.pa
    key = keys.registration_key(destination.host_name)
    if key not in state:
        return None
    registration = state[key]
    if registration is None:
        raise PolicyConflict(
            f"host {destination.host_name} has no PA registered (its vswitch agent registers it when it "
            "starts); nothing was moved",
            [FieldViolation("host_name", f"{destination.host_name} has no registered PA")],
        )
    return resource_from(registration, types_pb2.Host).pa_ip


def missing_keys(moves: Sequence[Move], destination: Destination, state: State) -> list[bytes]:
    """The keys the decision needs that ``state`` does not hold yet, in the order they can be known
    (a record's key needs its VSID's routing domain, its MAC index key the record)."""
    wanted: list[bytes] = []
    if destination.host_name:
        wanted.append(keys.registration_key(destination.host_name))
    pa = destination_pa(destination, state) if not destination.host_name or wanted[0] in state else None
    if pa:
        wanted.append(keys.pa_key(pa))
    for move in moves:
        wanted.append(keys.vsid_index_key(move.vsid))
        rdid = _rdid(state, move.vsid)
        if rdid is None:
            continue
        record_key = keys.record_key(rdid, move.vsid, move.ca)
        wanted.append(record_key)
        if move.changes_ca:
            wanted += [keys.subnet_key(rdid, move.vsid), keys.record_key(rdid, move.vsid, move.new_ca)]
            record = _record(state, record_key)
            if record is not None:
                wanted.append(keys.mac_index_key(move.vsid, record.mac))
    return [key for key in dict.fromkeys(wanted) if key not in state]


@dataclass
class MovePlan:
    """The move's transaction, and each record as it will be stored (in the order of the moves)."""

    pa: str
    compares: list[Compare] = field(default_factory=list)
    writes: list[Op] = field(default_factory=list)
    records: list[types_pb2.LookupRecord] = field(default_factory=list)

    def guard(self, compare: Compare) -> None:
        if all(existing.key != compare.key for existing in self.compares):
            self.compares.append(compare)


def plan_move(
    moves: Sequence[Move],
    destination: Destination,
    state: State,
    encode: Callable[[types_pb2.LookupRecord], bytes],
    owns: Callable[[str], bool] | None = None,
) -> MovePlan:
    """Decide the move over ``state`` (which holds every key ``missing_keys`` names); raises the
    first error, destination first, then the moves in order. ``owns``: whether the caller may reach a
    routing domain (a tenant's, services/policy/tenancy.py); a record in one it may not is, to it, no
    record (the VSID's domain is compared, so it stays so)."""
    pa = destination_pa(destination, state)
    assert pa is not None, "plan_move needs the destination's registration read"
    plan = MovePlan(pa)
    if destination.host_name:
        registration = state[keys.registration_key(destination.host_name)]
        assert registration is not None
        plan.guard(Compare.mod_revision_is(registration.key, registration.mod_revision))
    if state[keys.pa_key(pa)] is None:
        where = f"host {destination.host_name}'s PA {pa}" if destination.host_name else f"PA {pa}"
        raise PolicyConflict(
            f"{where} is not a registered provider address; nothing was moved",
            [FieldViolation(destination.field, f"{pa} is not a provider address")],
        )
    plan.guard(Compare.exists(keys.pa_key(pa)))
    for move in moves:
        plan.records.append(_plan_one(move, state, plan, encode, owns))
    if plan.writes:
        plan.writes.append(Put(keys.pa_ref_key(pa), b""))
    return plan


def _plan_one(
    move: Move,
    state: State,
    plan: MovePlan,
    encode: Callable[[types_pb2.LookupRecord], bytes],
    owns: Callable[[str], bool] | None,
) -> types_pb2.LookupRecord:
    what = f"lookup record {move.ca} in VSID {move.vsid}"
    rdid = _rdid(state, move.vsid)
    record_key = keys.record_key(rdid or "", move.vsid, move.ca)
    stored_kv = state.get(record_key) if rdid is not None else None
    if rdid is None or stored_kv is None or (owns is not None and not owns(rdid)):
        raise ResourceNotFound(
            f"{what} does not exist; nothing was moved", [FieldViolation(move.field, f"no {what}")]
        )
    plan.guard(Compare.value_is(keys.vsid_index_key(move.vsid), rdid.encode()))
    record = resource_from(stored_kv, types_pb2.LookupRecord)
    if move.expected_revision and record.revision != move.expected_revision:
        raise StaleRevision(
            f"{what} is at revision {record.revision}, not the expected {move.expected_revision}",
            [FieldViolation(f"{move.field}.expected_revision", f"stale: the record is at {record.revision}")],
        )
    plan.guard(Compare.mod_revision_is(record_key, stored_kv.mod_revision))
    if record.pa == plan.pa and not move.changes_ca:
        return record
    moved = types_pb2.LookupRecord()
    moved.CopyFrom(record)
    moved.revision = 0
    moved.rdid = rdid
    moved.pa = plan.pa
    if not move.changes_ca:
        plan.writes.append(Put(record_key, encode(moved)))
        return moved
    _check_new_ca(move, rdid, state, plan)
    moved.ca = move.new_ca
    mac_key = keys.mac_index_key(move.vsid, record.mac)
    holder = state.get(mac_key)
    if holder is not None and holder.value != move.ca.encode():
        raise PolicyConflict(
            f"the MAC index of VSID {move.vsid} gives {record.mac} to {holder.value.decode()}, not to "
            f"{move.ca}: the table is inconsistent; nothing was moved"
        )
    # The index follows the record (and an index entry a broken writer left out comes back).
    plan.guard(Compare.value_is(mac_key, holder.value) if holder is not None else Compare.absent(mac_key))
    plan.writes += [
        Delete(record_key),
        Put(keys.record_key(rdid, move.vsid, move.new_ca), encode(moved)),
        Put(mac_key, move.new_ca.encode()),
    ]
    return moved


def _check_new_ca(move: Move, rdid: str, state: State, plan: MovePlan) -> None:
    """A new CA must be an address the VSID's subnet admits for a VM (inside its CA prefixes, not a
    reserved or gateway address), and held by no record."""
    subnet_kv = state.get(keys.subnet_key(rdid, move.vsid))
    if subnet_kv is None:
        raise ResourceNotFound(f"virtual subnet {move.vsid} does not exist; nothing was moved")
    subnet = resource_from(subnet_kv, types_pb2.VirtualSubnet)
    plan.guard(Compare.mod_revision_is(subnet_kv.key, subnet_kv.mod_revision))
    field_path = f"{move.field}.new_ca"
    # The same rule as every record write (addresses.SubnetRule): inside a prefix, not reserved.
    problem = SubnetRule.of(subnet).ca_problem(move.new_ca)
    if problem:
        raise PolicyConflict(f"{problem}; nothing was moved", [FieldViolation(field_path, problem)])
    new_key = keys.record_key(rdid, move.vsid, move.new_ca)
    if state.get(new_key) is not None:
        raise ResourceExists(
            f"{move.new_ca} is taken in VSID {move.vsid}; nothing was moved",
            [FieldViolation(field_path, f"VSID {move.vsid} already has a record for {move.new_ca}")],
        )
    plan.guard(Compare.absent(new_key))


class RecordMover:
    """Reads, plans and commits moves; a lost race reads again and decides again (bounded)."""

    def __init__(self, txns: TableTxns) -> None:
        self._txns = txns

    def move(
        self, request: policy_pb2.MoveLookupRecordsRequest, owns: Callable[[str], bool] | None = None
    ) -> policy_pb2.MoveLookupRecordsResponse:
        moves, destination = validate_moves(request, self._txns.max_ops)
        for _ in self._txns.attempts(f"move {len(moves)} lookup records"):
            state, revision = self._read(moves, destination)
            plan = plan_move(moves, destination, state, self._txns.encoder(), owns)
            if not plan.writes:
                return _response(plan, revision)
            result = self._txns.write(plan.compares, plan.writes)
            if result.succeeded:
                for record in plan.records:
                    if not record.revision:
                        record.revision = result.revision
                return _response(plan, result.revision)
        raise AssertionError("unreachable")

    def _read(
        self, moves: Sequence[Move], destination: Destination
    ) -> tuple[dict[bytes, KeyValue | None], int]:
        """Every key the decision needs, read at one revision, and that revision. Keys are found in
        steps (a record's key needs its VSID's domain, its MAC index key the record), and the reads
        of different steps may straddle another writer's change: so once nothing is missing, all of
        them are read again in one snapshot, until that snapshot needs no key it lacks."""
        state: dict[bytes, KeyValue | None] = {}
        while True:
            while missing := missing_keys(moves, destination, state):
                state.update(self._snapshot(missing)[0])
            state, revision = self._snapshot(list(state))
            if not missing_keys(moves, destination, state):
                return state, revision

    def _snapshot(self, wanted: list[bytes]) -> tuple[dict[bytes, KeyValue | None], int]:
        found, revision = self._txns.snapshot([Get(key) for key in wanted])
        return {key: kvs[0] if kvs else None for key, kvs in zip(wanted, found, strict=True)}, revision


def _response(plan: MovePlan, revision: int) -> policy_pb2.MoveLookupRecordsResponse:
    return policy_pb2.MoveLookupRecordsResponse(lookup_records=plan.records, revision=revision, pa=plan.pa)
