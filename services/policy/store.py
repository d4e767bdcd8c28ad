"""The routing table in etcd (docs/key-schema.md): every policy read and write, over the KV protocol.

Each write is one transaction comparing what its decision read; when a compare fails because
another writer got there first, the write re-reads and decides again (at most ``max_attempts``
times), so a genuine conflict surfaces as ALREADY_EXISTS / FAILED_PRECONDITION / ABORTED and a lost
race never corrupts the table. Decisions are the pure functions of validation.py and
record_planner.py; transactions go through txns.py, bulk record streams through record_apply.py,
record moves through record_move.py, pages through listing.py, the host registry through hosts.py
and the watch through watch.py.

The routing domain key doubles as the domain's guard: every subnet create, update and delete
compares its mod revision and writes it again. So two concurrent subnet creates of one domain
cannot both pass the overlap check, and a domain delete cannot miss a subnet created meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from overland.v1 import policy_pb2, types_pb2
from services.common.errors import FieldViolation
from services.common.kv import KV, Compare, Delete, Get, KeyValue, Op, Put, WatchBacklog
from services.common.schema import keys, resource_from
from services.policy import subnet_change, validation
from services.policy.addresses import SubnetRule
from services.policy.errors import PolicyConflict, ResourceExists, ResourceNotFound
from services.policy.hosts import HostRegistry
from services.policy.listing import SCAN_CHUNK, ListPage, TableListing
from services.policy.record_apply import RecordApply, learn
from services.policy.record_move import RecordMover
from services.policy.record_planner import Mode, RecordChange, TableState, plan_transaction, prerequisite_keys
from services.policy.resource_store import (
    Guard,
    ResourceStore,
    check_expected,
    valid_ip,
    valid_rdid,
    valid_vsid,
)
from services.policy.tenancy import TenantFilter, admitter, domain_for
from services.policy.txns import DEFAULT_MAX_ATTEMPTS, TableTxns
from services.policy.unreadable import CheckResult, UnreadableEntries, check_table
from services.policy.watch import watch_table


@dataclass(frozen=True)
class _SubnetContext:
    domain: KeyValue | None
    index: KeyValue | None
    subnet: KeyValue | None
    others: list[KeyValue]
    revision: int


class PolicyStore(ResourceStore):
    """Reads and writes the routing table over a ``KV``. Thread-safe: it keeps no mutable state
    of its own between calls (each call builds its own view of the table)."""

    def __init__(
        self,
        kv: KV,
        *,
        clock: Callable[[], int] = time.time_ns,
        trace_context: Callable[[], types_pb2.TraceContext | None] = lambda: None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        unreadable: UnreadableEntries | None = None,
    ) -> None:
        self.kv = kv
        self._txns = TableTxns(kv, clock=clock, trace_context=trace_context, max_attempts=max_attempts)
        self.unreadable = unreadable or UnreadableEntries()
        self._listing = TableListing(kv, self.unreadable)
        self._hosts = HostRegistry(self._txns, self._listing, self.unreadable)
        self._mover = RecordMover(self._txns)

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

    def get_routing_domain(self, rdid: str, *, tenant: TenantFilter | None = None) -> types_pb2.RoutingDomain:
        rdid = valid_rdid(rdid, "rdid")
        found = self._get_resource(keys.domain_key(rdid), types_pb2.RoutingDomain, f"routing domain {rdid}")
        if tenant is not None and not tenant.owns_domain(found):
            raise ResourceNotFound(f"routing domain {rdid} does not exist")
        return found

    def update_routing_domain(
        self,
        domain: types_pb2.RoutingDomain,
        expected_revision: int = 0,
        *,
        tenant: TenantFilter | None = None,
    ) -> types_pb2.RoutingDomain:
        wanted = validation.validate_routing_domain(domain)

        def merge(stored: types_pb2.RoutingDomain) -> types_pb2.RoutingDomain:
            # The update compares the stored domain's revision: its owner is the one checked here.
            if tenant is not None and not tenant.owns_domain(stored):
                raise ResourceNotFound(f"routing domain {wanted.rdid} does not exist")
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

    def delete_routing_domain(
        self, rdid: str, expected_revision: int = 0, *, tenant: TenantFilter | None = None
    ) -> int:
        rdid = valid_rdid(rdid, "rdid")

        def dependents(found: KeyValue, revision: int) -> Guard:
            if tenant is not None and not tenant.owns_value(found):
                raise ResourceNotFound(f"routing domain {rdid} does not exist")
            # A subnet created after this count rewrites the domain key, so the delete's compare fails.
            subnets = self.kv.range(keys.subnets_prefix(rdid), revision=revision, count_only=True)
            if subnets.count:
                raise PolicyConflict(
                    f"routing domain {rdid} still has {subnets.count} virtual subnets; delete them first",
                    [FieldViolation("rdid", f"{subnets.count} virtual subnets depend on it")],
                )
            return [], []

        return self._delete(keys.domain_key(rdid), f"routing domain {rdid}", expected_revision, dependents)

    def list_routing_domains(
        self, page: types_pb2.PageRequest, *, tenant: TenantFilter | None = None
    ) -> ListPage[types_pb2.RoutingDomain]:
        return self._listing.across_domains(
            page, keys.domain_key, types_pb2.RoutingDomain, admit=admitter(tenant)
        )

    # -- virtual subnets -----------------------------------------------------------------------

    def _subnet_context(self, rdid: str, vsid: int) -> _SubnetContext:
        """Domain, VSID index, subnet and every subnet of the domain, at one revision."""
        (domain, index, subnet, others), revision = self._txns.snapshot(
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
            Put(keys.subnet_key(subnet.rdid, subnet.vsid), self._txns.encode(subnet)),
            Put(domain.key, domain.value),
            *extra_ops,
        ]
        result = self._txns.write(compares, ops)
        return result.revision if result.succeeded else None

    def create_virtual_subnet(
        self, subnet: types_pb2.VirtualSubnet, *, tenant: TenantFilter | None = None
    ) -> types_pb2.VirtualSubnet:
        created = validation.validate_virtual_subnet(subnet)
        index_key = keys.vsid_index_key(created.vsid)
        for _ in self._txns.attempts(f"create virtual subnet {created.vsid}"):
            context = self._subnet_context(created.rdid, created.vsid)
            domain, index = context.domain, context.index
            if domain is None or (tenant is not None and not tenant.owns_value(domain)):
                raise PolicyConflict(
                    f"routing domain {created.rdid} does not exist",
                    [FieldViolation("virtual_subnet.rdid", f"no routing domain {created.rdid}")],
                )
            if index is not None:
                # The number is taken; in which domain, only its tenant (or an admin) learns.
                holder = index.value.decode()
                where = f" (routing domain {holder})" if tenant is None or tenant.owns(holder) else ""
                raise ResourceExists(
                    f"virtual subnet {created.vsid} already exists{where}",
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

    def get_virtual_subnet(self, vsid: int, *, tenant: TenantFilter | None = None) -> types_pb2.VirtualSubnet:
        valid_vsid(vsid, "vsid")
        rdid = self._rdid_of(vsid, "vsid", tenant)
        return self._get_resource(
            keys.subnet_key(rdid, vsid), types_pb2.VirtualSubnet, f"virtual subnet {vsid}"
        )

    def update_virtual_subnet(
        self,
        subnet: types_pb2.VirtualSubnet,
        expected_revision: int = 0,
        *,
        tenant: TenantFilter | None = None,
    ) -> types_pb2.VirtualSubnet:
        if not subnet.rdid and subnet.vsid:
            filled = types_pb2.VirtualSubnet()
            filled.CopyFrom(subnet)
            filled.rdid = self._rdid_of(subnet.vsid, "virtual_subnet.vsid", tenant)
            subnet = filled
        wanted = validation.validate_virtual_subnet(subnet)
        what = f"virtual subnet {wanted.vsid}"
        for _ in self._txns.attempts(f"update {what}"):
            context = self._subnet_context(wanted.rdid, wanted.vsid)
            # To a tenant, a VSID in a domain not its own (named or not) is one that does not exist.
            foreign = tenant is not None and (
                not tenant.owns(wanted.rdid)
                or (context.index is not None and context.index.value != wanted.rdid.encode())
            )
            if context.index is None or foreign:
                raise ResourceNotFound(f"{what} does not exist")
            violations = validation.Violations()
            validation.immutable("virtual_subnet.rdid", context.index.value.decode(), wanted.rdid, violations)
            violations.raise_if_any("virtual subnet update")
            stored, domain = context.subnet, context.domain
            if stored is None or domain is None:
                raise ResourceNotFound(f"{what} does not exist")
            check_expected(stored, expected_revision, what)
            compares = [Compare.mod_revision_is(stored.key, stored.mod_revision)]
            if subnet_change.rule_changes(resource_from(stored, types_pb2.VirtualSubnet), wanted):
                stranded = subnet_change.stranded(self.kv, wanted, context.revision, self.unreadable)
                if stranded:
                    raise PolicyConflict(
                        f"{what} would strand what it holds: {stranded[0].description}", stranded
                    )
                compares += subnet_change.guards(wanted, context.revision)
            revision = self._write_subnet(wanted, domain, context.others, compares, [])
            if revision is not None:
                wanted.revision = revision
                return wanted
        raise AssertionError("unreachable")

    def delete_virtual_subnet(
        self, vsid: int, expected_revision: int = 0, *, tenant: TenantFilter | None = None
    ) -> int:
        valid_vsid(vsid, "vsid")
        what = f"virtual subnet {vsid}"
        for _ in self._txns.attempts(f"delete {what}"):
            # The delete compares the index read here, so the domain checked is the one it deletes in.
            rdid = self._rdid_of(vsid, "vsid", tenant)
            context = self._subnet_context(rdid, vsid)
            domain, index, stored = context.domain, context.index, context.subnet
            if index is None or stored is None or domain is None:
                raise ResourceNotFound(f"{what} does not exist")
            check_expected(stored, expected_revision, what)
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
            result = self._txns.write(
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
        self, page: types_pb2.PageRequest, rdid: str = "", *, tenant: TenantFilter | None = None
    ) -> ListPage[types_pb2.VirtualSubnet]:
        if rdid:
            rdid = valid_rdid(rdid, "rdid")
        return self._listing.across_domains(
            page, keys.subnets_prefix, types_pb2.VirtualSubnet, only_rdid=rdid or None, admit=admitter(tenant)
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
        pa_ip = valid_ip(pa_ip, "pa_ip")
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
        pa_ip = valid_ip(pa_ip, "pa_ip")

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
            chunk = self.kv.range(keys.TABLE_PREFIX, start=start, limit=SCAN_CHUNK, revision=revision)
            for kv in chunk.kvs:
                parsed = keys.parse_key(kv.key)
                if parsed is not None and parsed.kind == keys.KIND_RECORD:
                    record = self.unreadable.read(kv, types_pb2.LookupRecord, "pa-delete")
                    users += record is not None and record.pa == pa_ip
            if not chunk.more or not chunk.kvs:
                return users
            start = chunk.kvs[-1].key + b"\0"

    def list_provider_addresses(self, page: types_pb2.PageRequest) -> ListPage[types_pb2.ProviderAddress]:
        return self._listing.under_prefix(page, keys.PA_PREFIX, types_pb2.ProviderAddress)

    # -- lookup records ------------------------------------------------------------------------

    def _write_record(self, change: RecordChange) -> tuple[types_pb2.LookupRecord | None, int]:
        """One record write, as one transaction planned like a bulk one (``plan_transaction``) and
        checked by its compares; returns the record as stored (None for a delete) and the revision
        (0 when the write was a no-op: an unchanged record)."""
        txns = self._txns
        state = TableState()
        learn(txns, state, prerequisite_keys(change))
        for _ in txns.attempts(
            f"{change.mode.value} lookup record {change.record.ca} in VSID {change.record.vsid}"
        ):
            plan = plan_transaction([change], 0, state, txns.max_ops - 1, txns.encoder())
            while plan.end == 0:
                # The decision needs keys not read yet (the record, for an update or a delete).
                if not plan.needs:
                    raise AssertionError("a record plan made no progress and needs nothing")
                learn(txns, state, plan.needs)
                plan = plan_transaction([change], 0, state, txns.max_ops - 1, txns.encoder())
            if not plan.must_commit:
                return plan.results[0], 0
            # A lost race reads back every compared key in the same round trip, to decide again.
            reads = plan.failure_reads()
            result = txns.write(plan.compares, plan.success, reads)
            if result.succeeded:
                return plan.results[0], result.revision
            for get, found in zip(reads, result.responses, strict=True):
                state.learn(get.key, found[0] if found else None)
        raise AssertionError("unreachable")

    def create_lookup_record(
        self, record: types_pb2.LookupRecord, *, tenant: TenantFilter | None = None
    ) -> types_pb2.LookupRecord:
        valid = validation.validate_lookup_record(record)
        change = RecordChange(Mode.CREATE, valid, domain=domain_for(tenant, valid.vsid))
        stored, revision = self._write_record(change)
        assert stored is not None
        stored.revision = revision
        return stored

    def get_lookup_record(
        self, vsid: int, ca: str, *, tenant: TenantFilter | None = None
    ) -> types_pb2.LookupRecord:
        vsid, ca = validation.validate_record_id(vsid, ca)
        rdid = self._rdid_of(vsid, "vsid", tenant)
        return self._get_resource(
            keys.record_key(rdid, vsid, ca), types_pb2.LookupRecord, f"lookup record {ca} in VSID {vsid}"
        )

    def update_lookup_record(
        self,
        record: types_pb2.LookupRecord,
        expected_revision: int = 0,
        *,
        tenant: TenantFilter | None = None,
    ) -> types_pb2.LookupRecord:
        valid = validation.validate_lookup_record(record)
        change = RecordChange(
            Mode.UPDATE, valid, expected_revision=expected_revision, domain=domain_for(tenant, valid.vsid)
        )
        stored, revision = self._write_record(change)
        assert stored is not None
        if stored.revision == 0:
            stored.revision = revision
        return stored

    def delete_lookup_record(
        self, vsid: int, ca: str, expected_revision: int = 0, *, tenant: TenantFilter | None = None
    ) -> int:
        vsid, ca = validation.validate_record_id(vsid, ca)
        change = RecordChange(
            Mode.DELETE,
            types_pb2.LookupRecord(vsid=vsid, ca=ca),
            expected_revision=expected_revision,
            field="",
            domain=domain_for(tenant, vsid),
        )
        return self._write_record(change)[1]

    def list_lookup_records(
        self,
        page: types_pb2.PageRequest,
        vsid: int = 0,
        rdid: str = "",
        pa: str = "",
        *,
        tenant: TenantFilter | None = None,
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

        def wanted(record: types_pb2.LookupRecord) -> bool:
            return not pa or record.pa == pa

        if vsid:
            index = self.kv.get(keys.vsid_index_key(vsid))
            if index is None or (tenant is not None and not tenant.owns(index.value.decode())):
                return ListPage([], "", self.kv.current_revision())
            return self._listing.under_prefix(
                page, keys.records_prefix(index.value.decode(), vsid), types_pb2.LookupRecord, wanted
            )
        return self._listing.across_domains(
            page,
            keys.records_prefix,
            types_pb2.LookupRecord,
            only_rdid=rdid or None,
            wanted=wanted,
            admit=admitter(tenant),
        )

    def move_lookup_records(
        self, request: policy_pb2.MoveLookupRecordsRequest, *, tenant: TenantFilter | None = None
    ) -> policy_pb2.MoveLookupRecordsResponse:
        """Move records to a host's PA in one transaction, or nothing (see ``RecordMover``); a
        ``tenant`` moves only records of its own domains."""
        return self._mover.move(request, tenant.owns if tenant is not None else None)

    def bulk_apply(self) -> RecordApply:
        """Bulk upserts and deletes, fed as their stream arrives, applied in order in as few
        transactions as fit the ops limit (see ``RecordApply``). On failure it raises the cause
        with the count committed before it in its message."""
        return RecordApply(self._txns)

    # -- customer routes -----------------------------------------------------------------------

    def create_customer_route(
        self, route: types_pb2.CustomerRoute, *, tenant: TenantFilter | None = None
    ) -> types_pb2.CustomerRoute:
        created = validation.validate_customer_route(route)
        foreign = tenant is not None and not tenant.owns(created.rdid)
        key = keys.route_key(created.rdid, created.vsid, created.destination_prefix, created.next_hop)
        index_key = keys.vsid_index_key(created.vsid)
        subnet_key = keys.subnet_key(created.rdid, created.vsid)
        for _ in self._txns.attempts("create customer route"):
            (index_found, subnet_found), _revision = self._txns.snapshot([Get(index_key), Get(subnet_key)])
            index = index_found[0] if index_found else None
            if foreign or index is None or index.value.decode() != created.rdid or not subnet_found:
                raise PolicyConflict(
                    f"routing domain {created.rdid} has no virtual subnet {created.vsid}",
                    [FieldViolation("customer_route.vsid", f"VSID {created.vsid} is not in {created.rdid}")],
                )
            subnet = subnet_found[0]
            problem = SubnetRule.of(resource_from(subnet, types_pb2.VirtualSubnet)).next_hop_problem(
                created.next_hop
            )
            if problem:
                raise PolicyConflict(
                    f"customer route next hop {problem}", [FieldViolation("customer_route.next_hop", problem)]
                )
            result = self._txns.write(
                [
                    Compare.value_is(index_key, index.value),
                    Compare.mod_revision_is(subnet_key, subnet.mod_revision),
                    Compare.absent(key),
                ],
                [Put(key, self._txns.encode(created))],
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
        self,
        rdid: str,
        vsid: int,
        destination_prefix: str,
        next_hop: str,
        *,
        tenant: TenantFilter | None = None,
    ) -> types_pb2.CustomerRoute:
        route = validation.validate_route_id(rdid, vsid, destination_prefix, next_hop)
        _own_route(route, tenant)
        return self._get_resource(_route_key(route), types_pb2.CustomerRoute, "customer route")

    def update_customer_route(
        self,
        route: types_pb2.CustomerRoute,
        expected_revision: int = 0,
        *,
        tenant: TenantFilter | None = None,
    ) -> types_pb2.CustomerRoute:
        wanted = validation.validate_customer_route(route)
        _own_route(wanted, tenant)

        def merge(stored: types_pb2.CustomerRoute) -> types_pb2.CustomerRoute:
            stored.metric = wanted.metric
            return stored

        return self._update(
            _route_key(wanted), types_pb2.CustomerRoute, "customer route", expected_revision, merge
        )

    def delete_customer_route(
        self,
        rdid: str,
        vsid: int,
        destination_prefix: str,
        next_hop: str,
        expected_revision: int = 0,
        *,
        tenant: TenantFilter | None = None,
    ) -> int:
        route = validation.validate_route_id(rdid, vsid, destination_prefix, next_hop)
        _own_route(route, tenant)
        return self._delete(_route_key(route), "customer route", expected_revision)

    def list_customer_routes(
        self,
        page: types_pb2.PageRequest,
        rdid: str = "",
        vsid: int = 0,
        *,
        tenant: TenantFilter | None = None,
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
            if tenant is not None and not tenant.owns(rdid):
                return ListPage([], "", self.kv.current_revision())
            return self._listing.under_prefix(page, keys.routes_prefix(rdid, vsid), types_pb2.CustomerRoute)
        return self._listing.across_domains(
            page, keys.routes_prefix, types_pb2.CustomerRoute, only_rdid=rdid or None, admit=admitter(tenant)
        )

    # -- watch and status ----------------------------------------------------------------------

    def watch_table(
        self,
        start_revision: int,
        rdids: Sequence[str],
        on_open: Callable[[Callable[[], None]], None],
        backlog: WatchBacklog | None = None,
        *,
        tenant: TenantFilter | None = None,
    ) -> Iterator[policy_pb2.WatchTableResponse]:
        """Table changes after ``start_revision`` (0: from now), filtered to ``rdids`` and to a
        ``tenant``'s domains (see ``services.policy.watch.watch_table``)."""
        return watch_table(
            self.kv, start_revision, rdids, on_open, backlog, tenant=tenant, unreadable=self.unreadable
        )

    def table_status(self) -> tuple[int, list[types_pb2.HostStatus]]:
        return self._hosts.table_status()

    def get_host(self, host_name: str) -> types_pb2.Host:
        return self._hosts.get(host_name)

    def list_hosts(self, page: types_pb2.PageRequest) -> ListPage[types_pb2.Host]:
        return self._hosts.list(page)

    def check_table(self, *, quarantine: bool) -> CheckResult:
        """Every unreadable stored value (``unreadable.check_table``), quarantined on request."""
        return check_table(self._txns, quarantine=quarantine)

    def rdid_of_vsid(self, vsid: int, *, tenant: TenantFilter | None = None) -> str | None:
        index = self.kv.get(keys.vsid_index_key(vsid))
        rdid = index.value.decode() if index is not None else None
        return None if rdid is None or (tenant is not None and not tenant.owns(rdid)) else rdid

    def read_domain_snapshot(self, rdid: str) -> tuple[list[KeyValue], int]:
        """Every PA and every key of one routing domain, at one revision (for SelectNextHop)."""
        responses, revision = self._txns.snapshot(
            [Get(keys.PA_PREFIX, prefix=True), Get(keys.domain_prefix(rdid), prefix=True)]
        )
        return [kv for found in responses for kv in found], revision


def _own_route(route: types_pb2.CustomerRoute, tenant: TenantFilter | None) -> None:
    """A route is kept under its domain's key: one in a domain not the tenant's is none to it."""
    if tenant is not None and not tenant.owns(route.rdid):
        raise ResourceNotFound("customer route does not exist")


def _route_key(route: types_pb2.CustomerRoute) -> bytes:
    return keys.route_key(route.rdid, route.vsid, route.destination_prefix, route.next_hop)
