"""The routing table in etcd (docs/key-schema.md): every policy read and write, over the KV protocol.

Each write is one transaction comparing what its decision read; when a compare fails because
another writer got there first, the write re-reads and decides again (at most ``max_attempts``
times), so a genuine conflict surfaces as ALREADY_EXISTS / FAILED_PRECONDITION / ABORTED and a lost
race never corrupts the table. Decisions are the pure functions of validation.py and records.py.

The routing domain key doubles as the domain's guard: every subnet create, update and delete
compares its mod revision and writes it again. So two concurrent subnet creates of one domain
cannot both pass the overlap check, and a domain delete cannot miss a subnet created meanwhile.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from overland.v1 import policy_pb2, types_pb2
from services.common.errors import FieldViolation, OverlandError
from services.common.kv import (
    KV,
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    KVCompactedError,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchEvent,
    prefix_end,
)
from services.common.schema import Resource, decode_entry, encode_entry, keys, resource_from
from services.policy import validation
from services.policy.errors import (
    PolicyConflict,
    PolicyError,
    ResourceExists,
    ResourceNotFound,
    StaleRevision,
)
from services.policy.paging import PageCursor, encode_page_token, parse_page
from services.policy.record_planner import (
    Mode,
    RecordChange,
    TableState,
    TxnPlan,
    keys_of,
    plan_transaction,
    prerequisite_keys,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)
T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS = 16
# How many upcoming bulk changes get their VSID and PA keys read ahead in one round trip.
_PREFETCH_WINDOW = 2048
# Keys a filtered listing scans per etcd call.
_SCAN_CHUNK = 1000


@dataclass(frozen=True)
class ListPage(Generic[R]):
    """One page of a listing: the resources, the token of the next page ("" at the end), and the
    store revision every page of the listing was read at."""

    items: list[R]
    next_page_token: str
    revision: int


@dataclass(frozen=True)
class _SubnetContext:
    domain: KeyValue | None
    index: KeyValue | None
    subnet: KeyValue | None
    others: list[KeyValue]
    revision: int


@dataclass
class _Listing(Generic[R]):
    """A page being filled: what it lists, how many, and the revision it is pinned to (0 until the
    first read)."""

    kind: type[R]
    size: int
    wanted: Callable[[KeyValue], bool]
    revision: int
    items: list[R] = field(default_factory=list)

    @property
    def room(self) -> int:
        return self.size - len(self.items)

    def page(self, resume: bytes | None) -> ListPage[R]:
        token = encode_page_token(self.revision, resume) if resume is not None else ""
        return ListPage(self.items, token, self.revision)


@dataclass(frozen=True)
class ApplyResult:
    applied: int
    transactions: int
    revision: int


def bulk_failure(cause: OverlandError, applied: int, transactions: int) -> OverlandError:
    """A copy of the error that stopped a bulk apply (same category, so the same gRPC code) whose
    message says how much was committed before it."""
    message = (
        f"{cause.message} ({applied} records applied in {transactions} transactions before the failure; "
        "retrying the same stream completes the load)"
    )
    error = copy.copy(cause)
    error.message = message
    error.args = (message,)
    return error


# What a delete's dependents check adds to the delete: compares and ops.
Guard = tuple[list[Compare], list[Op]]


class PolicyStore:
    """Reads and writes the routing table over a ``KV``. Thread-safe: it keeps no mutable state
    of its own between calls (each call builds its own view of the table)."""

    def __init__(
        self,
        kv: KV,
        *,
        clock: Callable[[], int] = time.time_ns,
        trace_context: Callable[[], types_pb2.TraceContext | None] = lambda: None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.kv = kv
        self._clock = clock
        self._trace_context = trace_context
        self._max_attempts = max_attempts

    # -- plumbing ------------------------------------------------------------------------------

    def encode(self, resource: Resource) -> bytes:
        """The stored value of a resource; the trace context of the current call goes in here."""
        return self.encoder()(resource)

    def encoder(self) -> Callable[[Resource], bytes]:
        """``encode`` with the clock and the trace context read once, for the many records of one
        transaction."""
        write_time, trace = self._clock(), self._trace_context()
        return lambda resource: encode_entry(resource, write_time, trace)

    def _snapshot(self, gets: Sequence[Get]) -> tuple[list[tuple[KeyValue, ...]], int]:
        """Several reads at one revision, in one round trip."""
        result = self.kv.txn([], list(gets))
        return list(result.responses), result.revision

    def _read_keys(self, wanted: Sequence[bytes]) -> tuple[dict[bytes, KeyValue | None], int]:
        responses, revision = self._snapshot([Get(key) for key in wanted])
        return {key: (found[0] if found else None) for key, found in zip(wanted, responses, strict=True)}, (
            revision
        )

    def _attempts(self, what: str) -> Iterator[int]:
        """Bounded retries of a write that lost a race; gives up with ABORTED."""
        for attempt in range(self._max_attempts):
            if attempt:
                log.debug("write lost a race, retrying", extra={"what": what, "attempt": attempt})
            yield attempt
        raise StaleRevision(f"{what}: lost {self._max_attempts} races with concurrent writers; retry later")

    def _get_resource(self, key: bytes, kind: type[R], what: str) -> R:
        found = self.kv.get(key)
        if found is None:
            raise ResourceNotFound(f"{what} does not exist")
        return resource_from(found, kind)

    def _rdid_of(self, vsid: int, field: str) -> str:
        index = self.kv.get(keys.vsid_index_key(vsid))
        if index is None:
            raise ResourceNotFound(
                f"virtual subnet {vsid} does not exist",
                [FieldViolation(field, f"no virtual subnet with VSID {vsid}")],
            )
        return index.value.decode()

    def _update(
        self,
        key: bytes,
        kind: type[R],
        what: str,
        expected_revision: int,
        merge: Callable[[R], R],
    ) -> R:
        """Read-modify-write of one resource key with optimistic concurrency."""
        for _ in self._attempts(f"update {what}"):
            found = self.kv.get(key)
            if found is None:
                raise ResourceNotFound(f"{what} does not exist")
            _check_expected(found, expected_revision, what)
            updated = merge(resource_from(found, kind))
            value = self.encode(updated)  # type: ignore[arg-type]
            result = self._write([Compare.mod_revision_is(key, found.mod_revision)], [Put(key, value)])
            if result.succeeded:
                updated.revision = result.revision  # type: ignore[attr-defined]
                return updated
        raise AssertionError("unreachable")

    def _delete(
        self,
        key: bytes,
        what: str,
        expected_revision: int,
        dependents: Callable[[KeyValue, int], Guard] = lambda _kv, _rev: ([], []),
    ) -> int:
        """Delete one resource key once ``dependents`` (which raises) finds nothing depending on it at a
        revision; the compares and ops it returns join the delete (to fail it if a dependent appeared
        since, and to clean up)."""
        for _ in self._attempts(f"delete {what}"):
            found = self.kv.get(key)
            if found is None:
                raise ResourceNotFound(f"{what} does not exist")
            _check_expected(found, expected_revision, what)
            compares, ops = dependents(found, self.kv.current_revision())
            result = self._write(
                [Compare.mod_revision_is(key, found.mod_revision), *compares], [Delete(key), *ops]
            )
            if result.succeeded:
                return result.revision
        raise AssertionError("unreachable")

    def _create(self, key: bytes, resource: Resource, exists: ResourceExists) -> int:
        result = self._write([Compare.absent(key)], [Put(key, self.encode(resource))])
        if not result.succeeded:
            raise exists
        return result.revision

    # -- routing domains -----------------------------------------------------------------------

    def create_routing_domain(self, domain: types_pb2.RoutingDomain) -> types_pb2.RoutingDomain:
        created = validation.validate_routing_domain(domain, rdid_required=False)
        if not created.rdid:
            created.rdid = str(uuid.uuid4())
        created.revision = self._create(
            keys.domain_key(created.rdid),
            created,
            ResourceExists(
                f"routing domain {created.rdid} already exists",
                [FieldViolation("routing_domain.rdid", f"{created.rdid} is taken")],
            ),
        )
        return created

    def get_routing_domain(self, rdid: str) -> types_pb2.RoutingDomain:
        rdid = _valid_rdid(rdid, "rdid")
        return self._get_resource(keys.domain_key(rdid), types_pb2.RoutingDomain, f"routing domain {rdid}")

    def update_routing_domain(
        self, domain: types_pb2.RoutingDomain, expected_revision: int = 0
    ) -> types_pb2.RoutingDomain:
        wanted = validation.validate_routing_domain(domain)

        def merge(stored: types_pb2.RoutingDomain) -> types_pb2.RoutingDomain:
            stored.tenant_name = wanted.tenant_name
            stored.description = wanted.description
            return stored

        return self._update(
            keys.domain_key(wanted.rdid),
            types_pb2.RoutingDomain,
            f"routing domain {wanted.rdid}",
            expected_revision,
            merge,
        )

    def delete_routing_domain(self, rdid: str, expected_revision: int = 0) -> int:
        rdid = _valid_rdid(rdid, "rdid")

        def dependents(_found: KeyValue, revision: int) -> Guard:
            # A subnet created after this count rewrites the domain key, so the delete's compare fails.
            subnets = self.kv.range(keys.subnets_prefix(rdid), revision=revision, count_only=True)
            if subnets.count:
                raise PolicyConflict(
                    f"routing domain {rdid} still has {subnets.count} virtual subnets; delete them first",
                    [FieldViolation("rdid", f"{subnets.count} virtual subnets depend on it")],
                )
            return [], []

        return self._delete(keys.domain_key(rdid), f"routing domain {rdid}", expected_revision, dependents)

    def list_routing_domains(self, page: types_pb2.PageRequest) -> ListPage[types_pb2.RoutingDomain]:
        return self._list_across_domains(page, keys.domain_key, types_pb2.RoutingDomain)

    # -- virtual subnets -----------------------------------------------------------------------

    def _subnet_context(self, rdid: str, vsid: int) -> _SubnetContext:
        """Domain, VSID index, subnet and every subnet of the domain, at one revision."""
        (domain, index, subnet, others), revision = self._snapshot(
            [
                Get(keys.domain_key(rdid)),
                Get(keys.vsid_index_key(vsid)),
                Get(keys.subnet_key(rdid, vsid)),
                Get(keys.subnets_prefix(rdid), prefix=True),
            ]
        )
        return _SubnetContext(
            domain[0] if domain else None,
            index[0] if index else None,
            subnet[0] if subnet else None,
            list(others),
            revision,
        )

    def _write_subnet(
        self,
        subnet: types_pb2.VirtualSubnet,
        domain: KeyValue,
        others: list[KeyValue],
        extra_compares: Sequence[Compare],
        extra_ops: Sequence[Op],
    ) -> int | None:
        """Commit a subnet after the overlap check, guarded by the domain key; None when a race was lost."""
        validation.subnet_overlaps(subnet, [resource_from(kv, types_pb2.VirtualSubnet) for kv in others])
        compares = [
            Compare.mod_revision_is(domain.key, domain.mod_revision),
            *(Compare.mod_revision_is(kv.key, kv.mod_revision) for kv in others),
            *extra_compares,
        ]
        ops: list[Op] = [
            Put(keys.subnet_key(subnet.rdid, subnet.vsid), self.encode(subnet)),
            Put(domain.key, domain.value),
            *extra_ops,
        ]
        result = self._write(compares, ops)
        return result.revision if result.succeeded else None

    def create_virtual_subnet(self, subnet: types_pb2.VirtualSubnet) -> types_pb2.VirtualSubnet:
        created = validation.validate_virtual_subnet(subnet)
        index_key = keys.vsid_index_key(created.vsid)
        for _ in self._attempts(f"create virtual subnet {created.vsid}"):
            context = self._subnet_context(created.rdid, created.vsid)
            domain, index = context.domain, context.index
            if domain is None:
                raise PolicyConflict(
                    f"routing domain {created.rdid} does not exist",
                    [FieldViolation("virtual_subnet.rdid", f"no routing domain {created.rdid}")],
                )
            if index is not None:
                raise ResourceExists(
                    f"virtual subnet {created.vsid} already exists (routing domain {index.value.decode()})",
                    [FieldViolation("virtual_subnet.vsid", f"VSID {created.vsid} is taken")],
                )
            revision = self._write_subnet(
                created,
                domain,
                context.others,
                [Compare.absent(index_key)],
                [Put(index_key, created.rdid.encode())],
            )
            if revision is not None:
                created.revision = revision
                return created
        raise AssertionError("unreachable")

    def get_virtual_subnet(self, vsid: int) -> types_pb2.VirtualSubnet:
        _valid_vsid(vsid, "vsid")
        rdid = self._rdid_of(vsid, "vsid")
        return self._get_resource(
            keys.subnet_key(rdid, vsid), types_pb2.VirtualSubnet, f"virtual subnet {vsid}"
        )

    def update_virtual_subnet(
        self, subnet: types_pb2.VirtualSubnet, expected_revision: int = 0
    ) -> types_pb2.VirtualSubnet:
        if not subnet.rdid and subnet.vsid:
            filled = types_pb2.VirtualSubnet()
            filled.CopyFrom(subnet)
            filled.rdid = self._rdid_of(subnet.vsid, "virtual_subnet.vsid")
            subnet = filled
        wanted = validation.validate_virtual_subnet(subnet)
        what = f"virtual subnet {wanted.vsid}"
        for _ in self._attempts(f"update {what}"):
            context = self._subnet_context(wanted.rdid, wanted.vsid)
            if context.index is None:
                raise ResourceNotFound(f"{what} does not exist")
            violations = validation.Violations()
            validation.immutable("virtual_subnet.rdid", context.index.value.decode(), wanted.rdid, violations)
            violations.raise_if_any("virtual subnet update")
            stored, domain = context.subnet, context.domain
            if stored is None or domain is None:
                raise ResourceNotFound(f"{what} does not exist")
            _check_expected(stored, expected_revision, what)
            revision = self._write_subnet(
                wanted, domain, context.others, [Compare.mod_revision_is(stored.key, stored.mod_revision)], []
            )
            if revision is not None:
                wanted.revision = revision
                return wanted
        raise AssertionError("unreachable")

    def delete_virtual_subnet(self, vsid: int, expected_revision: int = 0) -> int:
        _valid_vsid(vsid, "vsid")
        what = f"virtual subnet {vsid}"
        for _ in self._attempts(f"delete {what}"):
            rdid = self._rdid_of(vsid, "vsid")
            context = self._subnet_context(rdid, vsid)
            domain, index, stored = context.domain, context.index, context.subnet
            if index is None or stored is None or domain is None:
                raise ResourceNotFound(f"{what} does not exist")
            _check_expected(stored, expected_revision, what)
            for label, prefix in (
                ("lookup records", keys.records_prefix(rdid, vsid)),
                ("customer routes", keys.routes_prefix(rdid, vsid)),
            ):
                count = self.kv.range(prefix, revision=context.revision, count_only=True).count
                if count:
                    raise PolicyConflict(
                        f"{what} still has {count} {label}; delete them first",
                        [FieldViolation("vsid", f"{count} {label} depend on it")],
                    )
            # The sweeps remove what a concurrent writer may have added after the count above, so
            # no record, MAC index entry or route outlives its subnet.
            result = self._write(
                [
                    Compare.mod_revision_is(domain.key, domain.mod_revision),
                    Compare.mod_revision_is(stored.key, stored.mod_revision),
                    Compare.mod_revision_is(index.key, index.mod_revision),
                ],
                [
                    Delete(stored.key),
                    Delete(index.key),
                    Put(domain.key, domain.value),
                    Delete(keys.records_prefix(rdid, vsid), prefix=True),
                    Delete(keys.mac_index_prefix(vsid), prefix=True),
                    Delete(keys.routes_prefix(rdid, vsid), prefix=True),
                ],
            )
            if result.succeeded:
                return result.revision
        raise AssertionError("unreachable")

    def list_virtual_subnets(
        self, page: types_pb2.PageRequest, rdid: str = ""
    ) -> ListPage[types_pb2.VirtualSubnet]:
        if rdid:
            rdid = _valid_rdid(rdid, "rdid")
        return self._list_across_domains(
            page, keys.subnets_prefix, types_pb2.VirtualSubnet, only_rdid=rdid or None
        )

    # -- provider addresses --------------------------------------------------------------------

    def create_provider_address(self, address: types_pb2.ProviderAddress) -> types_pb2.ProviderAddress:
        created = validation.validate_provider_address(address)
        created.revision = self._create(
            keys.pa_key(created.pa_ip),
            created,
            ResourceExists(
                f"provider address {created.pa_ip} already exists",
                [FieldViolation("provider_address.pa_ip", f"{created.pa_ip} is registered already")],
            ),
        )
        return created

    def get_provider_address(self, pa_ip: str) -> types_pb2.ProviderAddress:
        pa_ip = _valid_ip(pa_ip, "pa_ip")
        return self._get_resource(keys.pa_key(pa_ip), types_pb2.ProviderAddress, f"provider address {pa_ip}")

    def update_provider_address(
        self, address: types_pb2.ProviderAddress, expected_revision: int = 0
    ) -> types_pb2.ProviderAddress:
        wanted = validation.validate_provider_address(address)

        def merge(stored: types_pb2.ProviderAddress) -> types_pb2.ProviderAddress:
            stored.host_name = wanted.host_name
            stored.prefix_length = wanted.prefix_length
            stored.vlan_id = wanted.vlan_id
            return stored

        return self._update(
            keys.pa_key(wanted.pa_ip),
            types_pb2.ProviderAddress,
            f"provider address {wanted.pa_ip}",
            expected_revision,
            merge,
        )

    def delete_provider_address(self, pa_ip: str, expected_revision: int = 0) -> int:
        pa_ip = _valid_ip(pa_ip, "pa_ip")

        def dependents(_found: KeyValue, revision: int) -> Guard:
            users = self._records_using_pa(pa_ip, revision)
            if users:
                raise PolicyConflict(
                    f"provider address {pa_ip} is still used by {users} lookup records; "
                    "move or delete them first",
                    [FieldViolation("pa_ip", f"{users} lookup records use it")],
                )
            # Records scattered over the table cannot be guarded by one compare, but every write of
            # one that uses this PA touches its reference key: a record written since the scan fails
            # the delete, and the next attempt scans again.
            ref_key = keys.pa_ref_key(pa_ip)
            ref = self.kv.range(ref_key, revision=revision).kvs
            guard = Compare.mod_revision_is(ref_key, ref[0].mod_revision) if ref else Compare.absent(ref_key)
            return [guard], [Delete(ref_key)]

        return self._delete(keys.pa_key(pa_ip), f"provider address {pa_ip}", expected_revision, dependents)

    def _records_using_pa(self, pa_ip: str, revision: int) -> int:
        users = 0
        start: bytes | None = None
        while True:
            chunk = self.kv.range(keys.TABLE_PREFIX, start=start, limit=_SCAN_CHUNK, revision=revision)
            for kv in chunk.kvs:
                parsed = keys.parse_key(kv.key)
                if parsed is not None and parsed.kind == keys.KIND_RECORD:
                    users += resource_from(kv, types_pb2.LookupRecord).pa == pa_ip
            if not chunk.more or not chunk.kvs:
                return users
            start = chunk.kvs[-1].key + b"\0"

    def list_provider_addresses(self, page: types_pb2.PageRequest) -> ListPage[types_pb2.ProviderAddress]:
        return self._list_prefix(page, keys.PA_PREFIX, types_pb2.ProviderAddress)

    # -- lookup records ------------------------------------------------------------------------

    def _apply_one(self, change: RecordChange) -> tuple[types_pb2.LookupRecord | None, int]:
        """One record write; returns the record as stored (None for a delete) and the revision."""
        outcome: list[tuple[types_pb2.LookupRecord | None, int]] = []

        def keep(plan: TxnPlan, revision: int) -> None:
            outcome.extend((result, revision) for result in plan.results)

        run = RecordApply(self, on_commit=keep)
        run.feed([change])
        run.finish()
        return outcome[0]

    def create_lookup_record(self, record: types_pb2.LookupRecord) -> types_pb2.LookupRecord:
        change = RecordChange(Mode.CREATE, validation.validate_lookup_record(record))
        stored, revision = self._apply_one(change)
        assert stored is not None
        stored.revision = revision
        return stored

    def get_lookup_record(self, vsid: int, ca: str) -> types_pb2.LookupRecord:
        vsid, ca = validation.validate_record_id(vsid, ca)
        rdid = self._rdid_of(vsid, "vsid")
        return self._get_resource(
            keys.record_key(rdid, vsid, ca), types_pb2.LookupRecord, f"lookup record {ca} in VSID {vsid}"
        )

    def update_lookup_record(
        self, record: types_pb2.LookupRecord, expected_revision: int = 0
    ) -> types_pb2.LookupRecord:
        change = RecordChange(
            Mode.UPDATE, validation.validate_lookup_record(record), expected_revision=expected_revision
        )
        stored, revision = self._apply_one(change)
        assert stored is not None
        if stored.revision == 0:
            stored.revision = revision
        return stored

    def delete_lookup_record(self, vsid: int, ca: str, expected_revision: int = 0) -> int:
        vsid, ca = validation.validate_record_id(vsid, ca)
        change = RecordChange(
            Mode.DELETE,
            types_pb2.LookupRecord(vsid=vsid, ca=ca),
            expected_revision=expected_revision,
            field="",
        )
        return self._apply_one(change)[1]

    def list_lookup_records(
        self, page: types_pb2.PageRequest, vsid: int = 0, rdid: str = "", pa: str = ""
    ) -> ListPage[types_pb2.LookupRecord]:
        violations = validation.Violations()
        validation.check_ids_exclusive({"vsid": vsid, "rdid": rdid}, violations)
        if vsid:
            validation.check_vsid(vsid, "vsid", violations)
        if rdid:
            rdid = validation.check_rdid(rdid, "rdid", violations)
        if pa:
            pa = validation.check_ipv4(pa, "pa", violations)
        violations.raise_if_any("list filter")

        def wanted(kv: KeyValue) -> bool:
            return not pa or resource_from(kv, types_pb2.LookupRecord).pa == pa

        if vsid:
            index = self.kv.get(keys.vsid_index_key(vsid))
            if index is None:
                return ListPage([], "", self.kv.current_revision())
            return self._list_prefix(
                page, keys.records_prefix(index.value.decode(), vsid), types_pb2.LookupRecord, wanted
            )
        return self._list_across_domains(
            page, keys.records_prefix, types_pb2.LookupRecord, only_rdid=rdid or None, wanted=wanted
        )

    def bulk_apply(self) -> RecordApply:
        """Bulk upserts and deletes, fed as their stream arrives, applied in order in as few
        transactions as fit the ops limit (see ``RecordApply``). On failure it raises the cause
        with the count committed before it in its message."""
        return RecordApply(self, bulk=True)

    def _prefetch(self, changes: Sequence[RecordChange], position: int, state: TableState) -> int:
        """Read the VSID index and PA keys of the next window of changes in one round trip."""
        end = min(len(changes), position + _PREFETCH_WINDOW)
        wanted: dict[bytes, None] = {}
        for change in changes[position:end]:
            for key in prerequisite_keys(change):
                if not state.known(key):
                    wanted[key] = None
        self._learn(state, list(wanted))
        return end

    def _learn(self, state: TableState, wanted: Sequence[bytes]) -> None:
        step = self.kv.max_txn_ops
        for offset in range(0, len(wanted), step):
            found, _ = self._read_keys(wanted[offset : offset + step])
            for key, value in found.items():
                state.learn(key, value)

    # -- customer routes -----------------------------------------------------------------------

    def create_customer_route(self, route: types_pb2.CustomerRoute) -> types_pb2.CustomerRoute:
        created = validation.validate_customer_route(route)
        key = keys.route_key(created.rdid, created.vsid, created.destination_prefix, created.next_hop)
        index_key = keys.vsid_index_key(created.vsid)
        for _ in self._attempts("create customer route"):
            index = self.kv.get(index_key)
            if index is None or index.value.decode() != created.rdid:
                raise PolicyConflict(
                    f"routing domain {created.rdid} has no virtual subnet {created.vsid}",
                    [FieldViolation("customer_route.vsid", f"VSID {created.vsid} is not in {created.rdid}")],
                )
            result = self._write(
                [Compare.value_is(index_key, index.value), Compare.absent(key)],
                [Put(key, self.encode(created))],
                [Get(key)],
            )
            if result.succeeded:
                created.revision = result.revision
                return created
            if result.responses and result.responses[0]:
                raise ResourceExists(
                    "the customer route already exists",
                    [
                        FieldViolation(
                            "customer_route.destination_prefix", "a route with this next hop exists"
                        )
                    ],
                )
        raise AssertionError("unreachable")

    def get_customer_route(
        self, rdid: str, vsid: int, destination_prefix: str, next_hop: str
    ) -> types_pb2.CustomerRoute:
        route = validation.validate_route_id(rdid, vsid, destination_prefix, next_hop)
        return self._get_resource(_route_key(route), types_pb2.CustomerRoute, "customer route")

    def update_customer_route(
        self, route: types_pb2.CustomerRoute, expected_revision: int = 0
    ) -> types_pb2.CustomerRoute:
        wanted = validation.validate_customer_route(route)

        def merge(stored: types_pb2.CustomerRoute) -> types_pb2.CustomerRoute:
            stored.metric = wanted.metric
            return stored

        return self._update(
            _route_key(wanted), types_pb2.CustomerRoute, "customer route", expected_revision, merge
        )

    def delete_customer_route(
        self, rdid: str, vsid: int, destination_prefix: str, next_hop: str, expected_revision: int = 0
    ) -> int:
        route = validation.validate_route_id(rdid, vsid, destination_prefix, next_hop)
        return self._delete(_route_key(route), "customer route", expected_revision)

    def list_customer_routes(
        self, page: types_pb2.PageRequest, rdid: str = "", vsid: int = 0
    ) -> ListPage[types_pb2.CustomerRoute]:
        violations = validation.Violations()
        if rdid:
            rdid = validation.check_rdid(rdid, "rdid", violations)
        if vsid:
            validation.check_vsid(vsid, "vsid", violations)
            if not rdid:
                violations.add("rdid", "required with vsid (routes are kept per routing domain)")
        violations.raise_if_any("list filter")
        if vsid:
            return self._list_prefix(page, keys.routes_prefix(rdid, vsid), types_pb2.CustomerRoute)
        return self._list_across_domains(
            page, keys.routes_prefix, types_pb2.CustomerRoute, only_rdid=rdid or None
        )

    # -- listings ------------------------------------------------------------------------------

    def _range(self, prefix: bytes, start: bytes | None, limit: int, revision: int) -> RangeResult:
        try:
            return self.kv.range(prefix, start=start, limit=limit, revision=revision)
        except KVCompactedError as error:
            raise PolicyConflict(
                f"the listing's snapshot at revision {revision} was compacted (compacted up to "
                f"{error.compact_revision}); start the listing again without a page token"
            ) from error

    def _collect(self, listing: _Listing[R], prefix: bytes, start: bytes | None) -> bytes | None:
        """Add wanted resources under ``prefix`` to ``listing`` until it is full; returns the key to
        resume at, or None when the prefix is exhausted."""
        while True:
            limit = listing.room if listing.wanted is _all else _SCAN_CHUNK
            chunk = self._range(prefix, start, max(limit, 1), listing.revision)
            listing.revision = listing.revision or chunk.revision
            for kv in chunk.kvs:
                if listing.room <= 0:
                    return kv.key
                if listing.wanted(kv):
                    listing.items.append(resource_from(kv, listing.kind))
            if not chunk.more or not chunk.kvs:
                return None
            start = chunk.kvs[-1].key + b"\0"
            if listing.room <= 0:
                return start

    def _list_prefix(
        self,
        page: types_pb2.PageRequest,
        prefix: bytes,
        kind: type[R],
        wanted: Callable[[KeyValue], bool] | None = None,
    ) -> ListPage[R]:
        parsed = parse_page(page, prefix)
        cursor = parsed.cursor or PageCursor(0, prefix)
        listing = _Listing(kind, parsed.size, wanted or _all, cursor.revision)
        resume = self._collect(listing, prefix, cursor.start)
        return listing.page(resume)

    def _list_across_domains(
        self,
        page: types_pb2.PageRequest,
        prefix_of: Callable[[str], bytes],
        kind: type[R],
        only_rdid: str | None = None,
        wanted: Callable[[KeyValue], bool] | None = None,
    ) -> ListPage[R]:
        """List one kind of key of every routing domain, domain by domain (the table is kept per
        domain, so this skips from one domain to the next instead of scanning all of them)."""
        scope = keys.domain_prefix(only_rdid) if only_rdid else keys.TABLE_PREFIX
        parsed = parse_page(page, scope)
        listing = _Listing(kind, parsed.size, wanted or _all, parsed.cursor.revision if parsed.cursor else 0)
        start = parsed.cursor.start if parsed.cursor else None
        rdid = keys.domain_of(start) if start else None
        if rdid is None:
            rdid = self._next_domain(listing, scope, None)
            start = None
        while rdid is not None:
            resume = self._collect(listing, prefix_of(rdid), start)
            if resume is not None:
                return listing.page(resume)
            rdid = self._next_domain(listing, scope, rdid)
            start = None
            if rdid is not None and listing.room <= 0:
                return listing.page(prefix_of(rdid))
        if not listing.revision:
            listing.revision = self.kv.current_revision()
        return listing.page(None)

    def _next_domain(self, listing: _Listing[Any], scope: bytes, after: str | None) -> str | None:
        start = keys.TABLE_PREFIX if after is None else prefix_end(keys.domain_prefix(after))
        found = self._range(scope, start, 1, listing.revision)
        listing.revision = listing.revision or found.revision
        return keys.domain_of(found.kvs[0].key) if found.kvs else None

    # -- watch and status ----------------------------------------------------------------------

    def watch_table(
        self, start_revision: int, rdids: Sequence[str], on_open: Callable[[Callable[[], None]], None]
    ) -> Iterator[policy_pb2.WatchTableResponse]:
        """Table changes after ``start_revision`` (0: from now), filtered to ``rdids`` (provider
        addresses always pass). ``on_open`` receives the function that cancels the watch."""
        violations = validation.Violations()
        if start_revision < 0:
            violations.add("start_revision", "must not be negative")
        domains = {validation.check_rdid(r, f"rdids[{i}]", violations) for i, r in enumerate(rdids)}
        violations.raise_if_any("watch request")
        first = (start_revision or self.kv.current_revision()) + 1
        prefixes = tuple(keys.domain_prefix(r) for r in domains) if domains else (keys.TABLE_PREFIX,)
        stream = self.kv.watch(keys.ROOT, first, prev_kv=True)
        on_open(stream.cancel)
        try:
            for batch in stream:
                events = [
                    _table_event(event)
                    for event in batch.events
                    if event.kv.key.startswith(keys.PA_PREFIX) or event.kv.key.startswith(prefixes)
                ]
                if events or batch.progress:
                    yield policy_pb2.WatchTableResponse(events=events, revision=batch.revision)
        except KVCompactedError as error:
            raise PolicyConflict(
                f"start_revision {start_revision} is compacted (compacted up to {error.compact_revision}); "
                f"read the table again and watch from its revision",
                [
                    FieldViolation(
                        "start_revision", f"older than the compact revision {error.compact_revision}"
                    )
                ],
            ) from error
        finally:
            stream.cancel()

    def _write(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """A transaction that changes the table; it also moves the table revision marker."""
        return self.kv.txn(compares, [*success, Put(keys.TABLE_REVISION_KEY, b"")], failure)

    def table_status(self) -> tuple[int, list[types_pb2.HostStatus]]:
        """The store revision and each live agent's status. Lag is measured against the newest table
        change, not the store revision: agents' own status writes move that without changing the table."""
        (marker, found), revision = self._snapshot(
            [Get(keys.TABLE_REVISION_KEY), Get(keys.HOSTS_PREFIX, prefix=True)]
        )
        table_revision = marker[0].mod_revision if marker else 0
        hosts = []
        for kv in found:
            status = resource_from(kv, types_pb2.HostStatus)
            # The key lives only as long as the agent's lease: present means alive.
            status.alive = True
            status.lag_revisions = max(table_revision - status.applied_revision, 0)
            hosts.append(status)
        return revision, hosts

    def rdid_of_vsid(self, vsid: int) -> str | None:
        index = self.kv.get(keys.vsid_index_key(vsid))
        return index.value.decode() if index is not None else None

    def read_domain_snapshot(self, rdid: str) -> tuple[list[KeyValue], int]:
        """Every PA and every key of one routing domain, at one revision (for SelectNextHop)."""
        responses, revision = self._snapshot(
            [Get(keys.PA_PREFIX, prefix=True), Get(keys.domain_prefix(rdid), prefix=True)]
        )
        return [kv for found in responses for kv in found], revision


class RecordApply:
    """Applies lookup record changes in order, in as few transactions as fit the ops limit.

    A single-record write feeds its one change and finishes. A bulk stream feeds each request
    message's changes as it arrives: every transaction that is full by then commits, and only the
    changes not yet committed are held, so a stream of any length takes bounded memory and etcd
    starts writing while the stream still arrives. ``finish`` commits the rest."""

    def __init__(
        self,
        store: PolicyStore,
        on_commit: Callable[[TxnPlan, int], None] | None = None,
        *,
        bulk: bool = False,
    ) -> None:
        self._store = store
        self._on_commit = on_commit
        self._bulk = bulk
        self._state = TableState()
        # Changes fed and not yet committed start at _pending[_position].
        self._pending: list[RecordChange] = []
        self._position = 0
        self._prefetched_to = 0
        self._failures = 0
        # Values of ``applied`` at which the planned change was already read afresh.
        self._refreshed: set[int] = set()
        self._started = time.monotonic()
        self.applied = 0
        self.transactions = 0
        self.revision = 0

    def feed(self, changes: Sequence[RecordChange]) -> None:
        """Take more changes; commit every transaction they fill."""
        self._pending += changes
        self._advance(final=False)

    def finish(self) -> ApplyResult:
        """Commit what is left."""
        self._advance(final=True)
        result = ApplyResult(
            self.applied, self.transactions, self.revision or self._store.kv.current_revision()
        )
        if self._bulk:
            log.info(
                "bulk apply",
                extra={
                    "records": result.applied,
                    "transactions": result.transactions,
                    "revision": result.revision,
                    "seconds": round(time.monotonic() - self._started, 3),
                },
            )
        return result

    def stopped_by(self, error: OverlandError) -> OverlandError:
        """``error``, which stops the stream before the changes not yet fed, after committing the
        ones that were, with that count in its message."""
        self._advance(final=True)
        return bulk_failure(error, self.applied, self.transactions)

    def _advance(self, *, final: bool) -> None:
        try:
            self._commit_ready(final=final)
        except OverlandError as error:
            if not self._bulk:
                raise
            raise bulk_failure(error, self.applied, self.transactions) from error
        # What is committed is no longer needed.
        del self._pending[: self._position]
        self._prefetched_to -= self._position
        self._position = 0

    def _commit_ready(self, *, final: bool) -> None:
        store, state, changes = self._store, self._state, self._pending
        max_ops = store.kv.max_txn_ops
        while self._position < len(changes):
            position = self._position
            # A change takes at least one of a transaction's ops or compares, so this many more
            # fill a transaction: before the stream ends, fewer wait for the next message.
            if not final and len(changes) - position < max_ops:
                return
            if position >= self._prefetched_to:
                self._prefetched_to = store._prefetch(changes, position, state)
            try:
                plan = plan_transaction(changes, position, state, max_ops - 1, store.encoder())
            except PolicyError:
                # Decide on fresh reads before failing: the state may be from an earlier read
                # (unless it was just read back after a lost race).
                if self.applied in self._refreshed or self._failures:
                    raise
                self._refreshed.add(self.applied)
                for key in keys_of(changes[position], state):
                    state.forget(key)
                store._learn(state, prerequisite_keys(changes[position]))
                continue
            if plan.end == position:
                if not plan.needs:
                    raise AssertionError("a record plan made no progress and needs nothing")
                store._learn(state, plan.needs)
                continue
            if plan.must_commit:
                # Uncontended, the failure branch is left empty (it would double the request);
                # after a lost race it reads back every compared key.
                reads = plan.failure_reads() if self._failures else []
                result = store._write(plan.compares, plan.success, reads)
                if not result.succeeded:
                    self._failures += 1
                    if self._failures >= store._max_attempts:
                        raise StaleRevision(
                            f"lost {self._failures} races with concurrent writers of the same records; retry"
                        )
                    if reads:
                        for get, found in zip(reads, result.responses, strict=True):
                            state.learn(get.key, found[0] if found else None)
                    else:
                        store._learn(state, [get.key for get in plan.failure_reads()])
                    continue
                state.committed(plan.writes)
                self.revision = result.revision
                self.transactions += 1
            if self._on_commit is not None:
                self._on_commit(plan, self.revision)
            self.applied += plan.end - position
            self._position = plan.end
            self._failures = 0


def _all(_kv: KeyValue) -> bool:
    return True


def _table_event(event: WatchEvent) -> types_pb2.TableEvent:
    if event.type is EventType.PUT:
        return types_pb2.TableEvent(
            type=types_pb2.TableEvent.TYPE_PUT,
            key=event.kv.key.decode(),
            entry=decode_entry(event.kv.value, event.kv.key),
            revision=event.kv.mod_revision,
        )
    deleted = types_pb2.TableEvent(
        type=types_pb2.TableEvent.TYPE_DELETE, key=event.kv.key.decode(), revision=event.kv.mod_revision
    )
    if event.prev_kv is not None and event.prev_kv.value:
        deleted.entry.CopyFrom(decode_entry(event.prev_kv.value, event.prev_kv.key))
    return deleted


def _route_key(route: types_pb2.CustomerRoute) -> bytes:
    return keys.route_key(route.rdid, route.vsid, route.destination_prefix, route.next_hop)


def _check_expected(found: KeyValue, expected_revision: int, what: str) -> None:
    if expected_revision and found.mod_revision != expected_revision:
        raise StaleRevision(
            f"{what} is at revision {found.mod_revision}, not the expected {expected_revision}",
            [FieldViolation("expected_revision", f"stale: the resource is at revision {found.mod_revision}")],
        )


def _valid_rdid(rdid: str, field: str) -> str:
    violations = validation.Violations()
    checked = validation.check_rdid(rdid, field, violations)
    violations.raise_if_any("routing domain ID")
    return checked


def _valid_vsid(vsid: int, field: str) -> None:
    violations = validation.Violations()
    validation.check_vsid(vsid, field, violations)
    violations.raise_if_any("VSID")


def _valid_ip(value: str, field: str) -> str:
    violations = validation.Violations()
    checked = validation.check_ipv4(value, field, violations)
    violations.raise_if_any("address")
    return checked
