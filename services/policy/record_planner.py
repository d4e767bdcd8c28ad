"""Planning of lookup record writes as etcd transactions (pure, no I/O).

Every record write, single or bulk, goes through ``plan_transaction``: given what is known of the
store (``TableState``), it turns a run of ``RecordChange`` into one transaction whose compares
guard everything the decision depended on (the VSID's routing domain, the PA, the record's mod
revision, the MAC index) and whose failure branch reads those same keys back, so a lost race
costs one round trip and the retry decides on exact state. Keys the planner has never seen are
assumed absent (the fast path of a fresh load); the compare verifies the assumption.

A transaction stops before a change that would exceed the store's ops limit, touch a key the
transaction already writes (etcd rejects that), or need a key that was never read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from overland.v1 import types_pb2
from services.common.errors import FieldViolation
from services.common.kv import Compare, Delete, Get, KeyValue, Op, Put
from services.common.schema import CorruptEntry, keys, resource_from
from services.policy.addresses import SubnetRule
from services.policy.errors import (
    PolicyConflict,
    PolicyError,
    ResourceExists,
    ResourceNotFound,
    StaleRevision,
)


class Mode(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"
    # Bulk deletes: a missing record is a no-op, not NOT_FOUND.
    DELETE_IF_PRESENT = "delete_if_present"


_DELETES = (Mode.DELETE, Mode.DELETE_IF_PRESENT)
_FRESH_MODES = (Mode.UPSERT, Mode.CREATE)

# Bulk loads build these keys for every record, but there are few VSIDs and PAs: memoize.
_vsid_key = lru_cache(maxsize=4096)(keys.vsid_index_key)
_pa_key = lru_cache(maxsize=4096)(keys.pa_key)
_pa_ref_key = lru_cache(maxsize=4096)(keys.pa_ref_key)


@dataclass(slots=True)
class RecordChange:
    """One validated write. For deletes only ``record.vsid`` and ``record.ca`` matter.

    Bulk loads make one per record, so it is a plain slotted class (a frozen dataclass costs three
    times as much to build). ``record`` is the change's own (validation made it): planning sets its
    routing domain, and a committed write its revision."""

    mode: Mode
    record: types_pb2.LookupRecord
    expected_revision: int = 0
    # The routing domain (its RDID, UTF-8) the caller may write the record in: a tenant's own
    # (services/policy/tenancy.py). Its VSID in any other domain is, to this write, no subnet at all.
    # b"": no domain. None: any domain.
    domain: bytes | None = None
    # Keys that do not depend on the store, computed once: a change may be planned several times.
    vsid_key: bytes = field(init=False, repr=False, compare=False)
    pa_key: bytes | None = field(init=False, repr=False, compare=False)
    pa_ref_key: bytes = field(init=False, repr=False, compare=False)
    mac_key: bytes = field(init=False, repr=False, compare=False)
    ca_bytes: bytes = field(init=False, repr=False, compare=False)

    # The request field path of the record, for field violations (``upserts[3]``).
    field: str = "lookup_record"

    def __post_init__(self) -> None:
        record = self.record
        self.vsid_key = _vsid_key(record.vsid)
        self.ca_bytes = record.ca.encode()
        if self.mode in _DELETES:
            self.pa_key, self.pa_ref_key, self.mac_key = None, b"", b""
        else:
            self.pa_key = _pa_key(record.pa)
            self.pa_ref_key = _pa_ref_key(record.pa)
            self.mac_key = keys.mac_index_key(record.vsid, record.mac)


class TableState:
    """What is known of the store's keys: a key maps to its KeyValue, or None when known absent.
    A key not in the map is unknown."""

    def __init__(self) -> None:
        self.values: dict[bytes, KeyValue | None] = {}
        # Compares and key prefixes that many records share, built once (this is the hot path
        # of bulk loads, and building a Compare costs more than looking it up).
        self._guards: dict[tuple[bytes, bytes | None], Compare] = {}
        self._record_prefixes: dict[tuple[int, bytes], bytes] = {}
        self._subnet_keys: dict[tuple[int, bytes], bytes] = {}
        # Each subnet's rule and the guard "the subnet is as read", by its key and mod revision.
        self._rules: dict[tuple[bytes, int], tuple[SubnetRule, Compare]] = {}

    def guard(self, key: bytes, value: bytes | None) -> Compare:
        """The compare "``key`` holds ``value``", or "``key`` exists" when ``value`` is None."""
        found = self._guards.get((key, value))
        if found is None:
            found = Compare.exists(key) if value is None else Compare.value_is(key, value)
            self._guards[(key, value)] = found
        return found

    def subnet_key(self, rdid: bytes, vsid: int) -> bytes:
        found = self._subnet_keys.get((vsid, rdid))
        if found is None:
            found = self._subnet_keys[(vsid, rdid)] = keys.subnet_key(rdid.decode(), vsid)
        return found

    def rule_of(self, subnet: KeyValue) -> tuple[SubnetRule, Compare]:
        """The rule of a stored subnet and the compare that it is still as read (``CorruptEntry``
        when its value is not a subnet)."""
        cache_key = (subnet.key, subnet.mod_revision)
        found = self._rules.get(cache_key)
        if found is None:
            rule = SubnetRule.of(resource_from(subnet, types_pb2.VirtualSubnet))
            found = self._rules[cache_key] = (rule, Compare.mod_revision_is(subnet.key, subnet.mod_revision))
        return found

    def record_key(self, rdid: bytes, vsid: int, ca: bytes) -> bytes:
        prefix = self._record_prefixes.get((vsid, rdid))
        if prefix is None:
            prefix = self._record_prefixes[(vsid, rdid)] = keys.records_prefix(rdid.decode(), vsid)
        return prefix + ca

    def known(self, key: bytes) -> bool:
        return key in self.values

    def get(self, key: bytes) -> KeyValue | None:
        return self.values.get(key)

    def learn(self, key: bytes, value: KeyValue | None) -> None:
        self.values[key] = value

    def forget(self, key: bytes) -> None:
        self.values.pop(key, None)

    def committed(self, writes: dict[bytes, bytes | None]) -> None:
        """Record the effect of a committed transaction. Deleted keys are known absent; written
        ones become unknown again, which costs nothing in a load that writes each key once (the
        common case, and building their KeyValues would) and one extra round trip otherwise."""
        values = self.values
        for key, value in writes.items():
            if value is None:
                values[key] = None
            else:
                values.pop(key, None)


@dataclass
class TxnPlan:
    """One transaction for ``changes[start:end]``."""

    start: int
    end: int
    compares: list[Compare] = field(default_factory=list)
    success: list[Op] = field(default_factory=list)
    # key -> new value (None: deleted), applied to the TableState after commit.
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    # Whether some compare checks an assumption (a never-read key taken as absent).
    assumes: bool = False
    # Keys to read before ``changes[end]`` can be planned (empty when the stop had another cause).
    needs: list[bytes] = field(default_factory=list)
    # The resulting record of each change in the plan (None for deletes), in order.
    results: list[types_pb2.LookupRecord | None] = field(default_factory=list)
    # How many of the changes replace a stored record with a different one.
    replaced: int = 0

    @property
    def must_commit(self) -> bool:
        return bool(self.success) or self.assumes

    def failure_reads(self) -> list[Get]:
        """Reads of every compared key: as the failure branch, a lost race tells what changed."""
        return [Get(compare.key) for compare in self.compares]


class _Builder:
    """Accumulates the compares and ops of one transaction, refusing a change that does not fit."""

    def __init__(self, plan: TxnPlan, max_ops: int) -> None:
        self.plan = plan
        self.max_ops = max_ops
        self.compared: dict[bytes, Compare] = {}

    def try_add(self, step: _Step) -> bool:
        """Add the step's compares and ops unless it does not fit; whether it was added."""
        writes = self.plan.writes
        compared = self.compared
        new_compares = 0
        for compare in step.compares:
            # A change that reads a key this transaction writes must see that write committed
            # first, so it goes into the next transaction.
            if compare.key in writes:
                return False
            known = compared.get(compare.key)
            if known is None:
                new_compares += 1
            elif known != compare:
                return False
        for op in step.ops:
            if op.key in writes:
                return False
        # Touches are shared: changes that use the same PA touch its reference key once.
        touches = [key for key in step.touches if key not in writes]
        # etcd counts compares, success ops and failure ops separately against --max-txn-ops; the
        # failure branch, when sent, reads each compared key once.
        ops = len(self.plan.success) + len(step.ops) + len(touches)
        if max(len(compared) + new_compares, ops) > self.max_ops:
            return False
        for compare in step.compares:
            if compare.key not in compared:
                compared[compare.key] = compare
                self.plan.compares.append(compare)
        for op in [*step.ops, *(Put(key, b"") for key in touches)]:
            self.plan.success.append(op)
            writes[op.key] = op.value if isinstance(op, Put) else None
        self.plan.assumes = self.plan.assumes or step.assumes
        return True

    def add_fresh(
        self,
        changes: Sequence[RecordChange],
        start: int,
        state: TableState,
        encode: Callable[[types_pb2.LookupRecord], bytes],
    ) -> tuple[int, bool]:
        """The fast path of bulk loads: adds, from ``changes[start]`` on, upserts and creates of
        records whose record and MAC keys were never read, so both are assumed absent (the
        compares verify it). Returns the index of the first change not added, and whether that
        is because the transaction cannot take it (else it is of another kind, or the end).

        One loop over the run, with everything it touches in locals: this is where a bulk load
        spends its time."""
        plan = self.plan
        values, compared = state.values, self.compared
        compares, success, writes, results = plan.compares, plan.success, plan.writes, plan.results
        max_ops = self.max_ops
        absent = Compare.absent
        for index in range(start, len(changes)):
            change = changes[index]
            pa_key = change.pa_key
            if change.mode not in _FRESH_MODES or change.expected_revision or pa_key is None:
                return index, False
            vsid_key = change.vsid_key
            subnet = values.get(vsid_key)
            if subnet is None or values.get(pa_key) is None:
                return index, False
            if change.domain is not None and change.domain != subnet.value:
                return index, False
            # The subnet's rule (CA inside its prefixes and not reserved, MAC not its gateway's): a
            # change that breaks it, or whose subnet is unknown or corrupt, takes the full path.
            stored_subnet = values.get(state.subnet_key(subnet.value, change.record.vsid))
            if stored_subnet is None:
                return index, False
            try:
                rule, subnet_guard = state.rule_of(stored_subnet)
            except CorruptEntry:
                return index, False
            if rule.ca_problem(change.record.ca) or rule.mac_problem(change.record.mac):
                return index, False
            record_key = state.record_key(subnet.value, change.record.vsid, change.ca_bytes)
            mac_key = change.mac_key
            if record_key in values or mac_key in values or record_key in compared or mac_key in compared:
                return index, False
            if record_key in writes or mac_key in writes:
                return index, True
            # TableState.guard interns its compares, so a known guard is usually the same object.
            vsid_guard = state.guard(vsid_key, subnet.value)
            known_vsid = compared.get(vsid_key)
            if known_vsid is not None and known_vsid is not vsid_guard and known_vsid != vsid_guard:
                return index, True
            pa_guard = state.guard(pa_key, None)
            known_pa = compared.get(pa_key)
            if known_pa is not None and known_pa is not pa_guard and known_pa != pa_guard:
                return index, True
            subnet_key = subnet_guard.key
            known_subnet = compared.get(subnet_key)
            if known_subnet is not None and known_subnet is not subnet_guard and known_subnet != subnet_guard:
                return index, True
            touch = change.pa_ref_key not in writes
            new_compares = (known_vsid is None) + (known_pa is None) + (known_subnet is None) + 2
            if len(compared) + new_compares > max_ops or len(success) + 2 + touch > max_ops:
                return index, True
            if known_vsid is None:
                compared[vsid_key] = vsid_guard
                compares.append(vsid_guard)
            if known_subnet is None:
                compared[subnet_key] = subnet_guard
                compares.append(subnet_guard)
            if known_pa is None:
                compared[pa_key] = pa_guard
                compares.append(pa_guard)
            record = _stored_record(change, subnet.value.decode())
            value = encode(record)
            compared[record_key] = record_absent = absent(record_key)
            compared[mac_key] = mac_absent = absent(mac_key)
            compares += (record_absent, mac_absent)
            success += (Put(record_key, value), Put(mac_key, change.ca_bytes))
            writes[record_key] = value
            writes[mac_key] = change.ca_bytes
            if touch:
                success.append(Put(change.pa_ref_key, b""))
                writes[change.pa_ref_key] = b""
            plan.assumes = True
            results.append(record)
        return len(changes), False


@dataclass
class _Step:
    compares: list[Compare] = field(default_factory=list)
    ops: list[Put | Delete] = field(default_factory=list)
    # Keys to touch (an empty put) once per transaction, however many changes ask.
    touches: list[bytes] = field(default_factory=list)
    assumes: bool = False
    result: types_pb2.LookupRecord | None = None
    replaced: bool = False


class _NeedKeys(Exception):
    def __init__(self, needed: list[bytes]) -> None:
        super().__init__("keys must be read first")
        self.needed = needed


def prerequisite_keys(change: RecordChange) -> list[bytes]:
    """Keys that must be known before a change can be planned (they do not depend on the rdid)."""
    return [change.vsid_key] if change.pa_key is None else [change.vsid_key, change.pa_key]


def plan_transaction(
    changes: Sequence[RecordChange],
    start: int,
    state: TableState,
    max_ops: int,
    encode: Callable[[types_pb2.LookupRecord], bytes],
) -> TxnPlan:
    """Plan one transaction for as many changes from ``changes[start]`` on as fit.

    Raises a ``PolicyError`` (or ``CorruptEntry``, for a stored record that does not decode) only for
    ``changes[start]``; an error at a later change ends the transaction before it, so the changes
    before it commit and the caller reports an exact count.
    """
    plan = TxnPlan(start=start, end=start)
    builder = _Builder(plan, max_ops)
    index = start
    while index < len(changes):
        index, full = builder.add_fresh(changes, index, state, encode)
        plan.end = index
        if index == len(changes) or (full and index > start):
            break
        try:
            step = _plan_change(changes[index], state, encode)
        except _NeedKeys as need:
            plan.needs = need.needed
            break
        except (PolicyError, CorruptEntry):
            if index == start:
                raise
            break
        if not builder.try_add(step):
            if index == start:
                raise PolicyConflict(
                    f"{changes[index].field} needs more operations than one transaction allows ({max_ops})"
                )
            break
        plan.results.append(step.result)
        plan.replaced += step.replaced
        index += 1
        plan.end = index
    return plan


def _plan_change(
    change: RecordChange, state: TableState, encode: Callable[[types_pb2.LookupRecord], bytes]
) -> _Step:
    record = change.record
    values = state.values
    vsid_key = change.vsid_key
    if vsid_key not in values or (change.pa_key is not None and change.pa_key not in values):
        raise _NeedKeys([key for key in prerequisite_keys(change) if key not in values])
    subnet = values[vsid_key]
    if subnet is not None and change.domain is not None and subnet.value != change.domain:
        # A subnet of a domain the caller may not reach is, to it, no subnet: the same answers (its
        # domain compared, so that it stays so).
        if change.mode is Mode.DELETE_IF_PRESENT:
            return _Step(compares=[state.guard(vsid_key, subnet.value)])
        subnet = None
    if subnet is None and change.mode is Mode.DELETE_IF_PRESENT:
        # No subnet, so no record: nothing to delete, as long as the subnet stays absent.
        return _Step(compares=[Compare.absent(vsid_key)])
    if subnet is None and change.mode is Mode.DELETE:
        raise ResourceNotFound(f"lookup record {record.ca} in VSID {record.vsid} does not exist")
    if subnet is None:
        raise PolicyConflict(
            f"virtual subnet {record.vsid} does not exist",
            [FieldViolation(f"{change.field}.vsid", f"no virtual subnet with VSID {record.vsid}")],
        )
    step = _Step(compares=[state.guard(vsid_key, subnet.value)])
    record_key = state.record_key(subnet.value, record.vsid, change.ca_bytes)
    known = record_key in values
    needs = []
    if not known and (change.mode in (Mode.UPDATE, Mode.DELETE) or change.expected_revision != 0):
        needs.append(record_key)
    subnet_key = b"" if change.mode in _DELETES else state.subnet_key(subnet.value, record.vsid)
    if subnet_key and subnet_key not in values:
        needs.append(subnet_key)
    if needs:
        raise _NeedKeys(needs)
    if subnet_key:
        step.compares.append(_subnet_rule_guard(change, values[subnet_key], state))
    existing_kv = values.get(record_key)
    existing = resource_from(existing_kv, types_pb2.LookupRecord) if existing_kv is not None else None
    _check_existing(change, existing, known=known)
    if existing_kv is not None:
        step.compares.append(Compare.mod_revision_is(record_key, existing_kv.mod_revision))
    else:
        step.compares.append(Compare.absent(record_key))
        step.assumes = not known
    if change.mode in _DELETES:
        if existing is not None:
            old_mac_key = keys.mac_index_key(record.vsid, existing.mac)
            step.compares.append(Compare.value_is(old_mac_key, change.ca_bytes))
            step.ops += [Delete(record_key), Delete(old_mac_key)]
        return step
    _plan_upsert(
        change,
        rdid=subnet.value.decode(),
        state=state,
        existing=existing,
        record_key=record_key,
        step=step,
        encode=encode,
    )
    return step


def _subnet_rule_guard(change: RecordChange, subnet: KeyValue | None, state: TableState) -> Compare:
    """Check a record against its subnet's rule (``addresses.SubnetRule``); the compare that keeps
    the subnet as the check read it."""
    record = change.record
    if subnet is None:
        raise PolicyConflict(
            f"virtual subnet {record.vsid} does not exist",
            [FieldViolation(f"{change.field}.vsid", f"no virtual subnet with VSID {record.vsid}")],
        )
    rule, guard = state.rule_of(subnet)
    violations = []
    problem = rule.ca_problem(record.ca)
    if problem:
        violations.append(FieldViolation(f"{change.field}.ca", problem))
    problem = rule.mac_problem(record.mac)
    if problem:
        violations.append(FieldViolation(f"{change.field}.mac", problem))
    if violations:
        raise PolicyConflict(
            f"lookup record {record.ca} does not fit virtual subnet {record.vsid}: "
            + "; ".join(v.description for v in violations),
            violations,
        )
    return guard


def _check_existing(change: RecordChange, existing: types_pb2.LookupRecord | None, *, known: bool) -> None:
    record = change.record
    what = f"lookup record {record.ca} in VSID {record.vsid}"
    if existing is None and known and change.mode in (Mode.UPDATE, Mode.DELETE):
        raise ResourceNotFound(f"{what} does not exist")
    if change.expected_revision:
        if existing is None:
            raise ResourceNotFound(f"{what} does not exist")
        if existing.revision != change.expected_revision:
            raise StaleRevision(
                f"{what} is at revision {existing.revision}, not the expected {change.expected_revision}",
                [
                    FieldViolation(
                        "expected_revision", f"stale: the record is at revision {existing.revision}"
                    )
                ],
            )
    if existing is not None and change.mode is Mode.CREATE:
        raise ResourceExists(
            f"{what} already exists",
            [
                FieldViolation(
                    f"{change.field}.ca", f"VSID {record.vsid} already has a record for {record.ca}"
                )
            ],
        )


def _plan_upsert(
    change: RecordChange,
    *,
    rdid: str,
    state: TableState,
    existing: types_pb2.LookupRecord | None,
    record_key: bytes,
    step: _Step,
    encode: Callable[[types_pb2.LookupRecord], bytes],
) -> None:
    record = _stored_record(change, rdid)
    if existing is not None:
        stored_revision = existing.revision
        existing.revision = 0
        unchanged = existing == record
        existing.revision = stored_revision
        if unchanged:
            # An equal record is a no-op. Its compares stay: they keep it out of a transaction
            # that writes the record first, and guard it when it shares one with real writes.
            step.result = existing
            return
    pa_key = change.pa_key
    assert pa_key is not None
    if state.values[pa_key] is None:
        raise PolicyConflict(
            f"provider address {record.pa} is not registered",
            [FieldViolation(f"{change.field}.pa", f"{record.pa} is not a registered provider address")],
        )
    step.compares.append(state.guard(pa_key, None))
    step.ops.append(Put(record_key, encode(record)))
    step.replaced = existing is not None
    step.touches.append(change.pa_ref_key)
    if existing is None or existing.mac != record.mac:
        mac_key = change.mac_key
        holder = state.values.get(mac_key)
        ca = change.ca_bytes
        if holder is not None and holder.value != ca:
            raise ResourceExists(
                f"MAC {record.mac} is already used by {holder.value.decode()} in VSID {record.vsid}",
                [
                    FieldViolation(
                        f"{change.field}.mac",
                        f"VSID {record.vsid} already has {record.mac} (CA {holder.value.decode()})",
                    )
                ],
            )
        if holder is None:
            step.compares.append(Compare.absent(mac_key))
            step.assumes = step.assumes or mac_key not in state.values
        else:
            step.compares.append(Compare.value_is(mac_key, holder.value))
        step.ops.append(Put(mac_key, ca))
        if existing is not None:
            old_mac_key = keys.mac_index_key(record.vsid, existing.mac)
            step.compares.append(Compare.value_is(old_mac_key, ca))
            step.ops.append(Delete(old_mac_key))
    step.result = record


def _stored_record(change: RecordChange, rdid: str) -> types_pb2.LookupRecord:
    """The record as it is stored: the validated one (which carries no revision, so it compares
    equal to an unchanged stored record) with its routing domain. That is the change's own record,
    which validation made for it: setting the domain in place saves a copy per record."""
    record = change.record
    record.rdid = rdid
    return record


def keys_of(change: RecordChange, state: TableState) -> list[bytes]:
    """Every key a change's decision reads, so the caller can forget them and read them afresh."""
    found = prerequisite_keys(change)
    subnet = state.get(keys.vsid_index_key(change.record.vsid))
    if subnet is not None:
        found.append(keys.record_key(subnet.value.decode(), change.record.vsid, change.record.ca))
        found.append(state.subnet_key(subnet.value, change.record.vsid))
    if change.mode not in _DELETES:
        found.append(keys.mac_index_key(change.record.vsid, change.record.mac))
    return found
