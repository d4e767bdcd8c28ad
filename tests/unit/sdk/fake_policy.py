"""An in-memory PolicyService for SDK and CLI unit tests: real gRPC, rich error statuses, fault injection.

It validates like the real service where the SDK's behaviour depends on it (field violations, unknown
PA, duplicates, stale revisions), pages lists, streams watches and counts calls. ``faults`` makes the
next calls of a method fail with a given code; ``delays`` makes a method slow, for deadline tests.
"""

from __future__ import annotations

import collections
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from overland.defaults import MAX_VSID, MIN_VSID
from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2

MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


class Abort(Exception):
    """A status to end the call with, carrying BadRequest field violations."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or {}

    def status(self) -> grpc.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations.items()
                ]
            )
            detail = any_pb2.Any()
            detail.Pack(bad_request)
            status.details.append(detail)
        return rpc_status.to_status(status)


def _check_ip(violations: dict[str, str], field: str, value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        violations[field] = f"{value!r} is not an IPv4 address"


class Table:
    """One resource kind: messages by identity, with revisions and paging."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...]) -> Any:
        if key not in self.rows:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"{self.name} {'/'.join(map(str, key))} not found")
        return self.rows[key]

    def check_revision(self, key: tuple[Any, ...], expected: int) -> None:
        current = self.get(key)
        if expected and current.revision != expected:
            raise Abort(grpc.StatusCode.ABORTED, f"{self.name} changed: revision {current.revision}")

    def page(self, request: Any, keep: Callable[[Any], bool]) -> tuple[list[Any], str]:
        rows = [self.rows[k] for k in sorted(self.rows) if keep(self.rows[k])]
        start = int(request.page.page_token or 0)
        size = request.page.page_size or 100
        chunk = rows[start : start + size]
        token = str(start + size) if start + size < len(rows) else ""
        return chunk, token


class FakePolicy(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.revision = 1
        self.events: list[types_pb2.TableEvent] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.faults: dict[str, list[grpc.StatusCode]] = collections.defaultdict(list)
        self.delays: dict[str, float] = {}
        self.bulk_messages = 0
        self.metadata: dict[str, dict[str, str | bytes]] = {}
        self.watch_break_after: int | None = None
        self.domains = Table("routing domain")
        self.subnets = Table("virtual subnet")
        self.pas = Table("provider address")
        self.records = Table("lookup record")
        self.routes = Table("customer route")

    # --- plumbing -------------------------------------------------------------------------------
    def _enter(self, method: str, context: grpc.ServicerContext) -> None:
        self.calls[method] += 1
        self.metadata[method] = dict(context.invocation_metadata())
        if self.faults[method]:
            code = self.faults[method].pop(0)
            context.abort_with_status(Abort(code, f"injected {code.name}").status())
        if method in self.delays:
            time.sleep(self.delays[method])

    def _run(self, method: str, context: grpc.ServicerContext, body: Callable[[], Any]) -> Any:
        self._enter(method, context)
        try:
            with self.lock:
                return body()
        except Abort as abort:
            context.abort_with_status(abort.status())

    def _put(self, table: Table, key: tuple[Any, ...], message: Any, kind: str) -> Any:
        self.revision += 1
        message.revision = self.revision
        table.rows[key] = message
        self._event(types_pb2.TableEvent.TYPE_PUT, f"{table.name}/{key}", kind, message)
        return message

    def _delete(
        self, table: Table, key: tuple[Any, ...], expected: int, kind: str
    ) -> policy_pb2.DeleteResponse:
        table.check_revision(key, expected)
        message = table.rows.pop(key)
        self.revision += 1
        self._event(types_pb2.TableEvent.TYPE_DELETE, f"{table.name}/{key}", kind, message)
        return policy_pb2.DeleteResponse(revision=self.revision)

    def _event(self, event_type: Any, key: str, kind: str, message: Any) -> None:
        entry = types_pb2.StoreEntry(**{kind: message})
        self.events.append(
            types_pb2.TableEvent(type=event_type, key=key, entry=entry, revision=self.revision)
        )
        self.lock.notify_all()

    # --- validation -----------------------------------------------------------------------------
    def _valid_record(self, record: types_pb2.LookupRecord, field: str = "lookup_record") -> None:
        violations: dict[str, str] = {}
        _check_ip(violations, f"{field}.ca", record.ca)
        _check_ip(violations, f"{field}.pa", record.pa)
        if f"{field}.pa" not in violations and ipaddress.IPv4Address(record.pa).is_multicast:
            violations[f"{field}.pa"] = f"{record.pa} is multicast"
        if not MAC.match(record.mac):
            violations[f"{field}.mac"] = f"{record.mac!r} is not a MAC address"
        elif int(record.mac[:2], 16) & 1:
            violations[f"{field}.mac"] = f"{record.mac} is a multicast MAC"
        if not MIN_VSID <= record.vsid <= MAX_VSID:
            violations[f"{field}.vsid"] = f"must be within {MIN_VSID}..{MAX_VSID}"
        if violations:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid lookup record", violations)
        if (record.vsid,) not in self.subnets.rows:
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"virtual subnet {record.vsid} does not exist",
                {f"{field}.vsid": "no such virtual subnet"},
            )
        if (record.pa,) not in self.pas.rows:
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"provider address {record.pa} is not registered",
                {f"{field}.pa": "not a registered provider address"},
            )
        record.rdid = self.subnets.rows[(record.vsid,)].rdid
        record.rule = record.rule or types_pb2.LOOKUP_RULE_ENCAP
        record.type = record.type or types_pb2.LOOKUP_TYPE_STATIC

    # --- routing domains ------------------------------------------------------------------------
    def CreateRoutingDomain(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            domain = request.routing_domain
            if not domain.tenant_name:
                raise Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "invalid routing domain",
                    {"routing_domain.tenant_name": "required"},
                )
            domain.rdid = domain.rdid or f"rd-{self.revision + 1}"
            if (domain.rdid,) in self.domains.rows:
                raise Abort(grpc.StatusCode.ALREADY_EXISTS, f"routing domain {domain.rdid} exists")
            return self._put(self.domains, (domain.rdid,), domain, "routing_domain")

        return self._run("CreateRoutingDomain", context, body)

    def GetRoutingDomain(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._run("GetRoutingDomain", context, lambda: self.domains.get((request.rdid,)))

    def UpdateRoutingDomain(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            key = (request.routing_domain.rdid,)
            self.domains.check_revision(key, request.expected_revision)
            return self._put(self.domains, key, request.routing_domain, "routing_domain")

        return self._run("UpdateRoutingDomain", context, body)

    def DeleteRoutingDomain(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._run(
            "DeleteRoutingDomain",
            context,
            lambda: self._delete(self.domains, (request.rdid,), request.expected_revision, "routing_domain"),
        )

    def ListRoutingDomains(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            rows, token = self.domains.page(request, lambda _: True)
            return policy_pb2.ListRoutingDomainsResponse(
                routing_domains=rows, next_page_token=token, revision=self.revision
            )

        return self._run("ListRoutingDomains", context, body)

    # --- subnets and provider addresses (what records depend on) --------------------------------
    def CreateVirtualSubnet(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            subnet = request.virtual_subnet
            self.domains.get((subnet.rdid,))
            return self._put(self.subnets, (subnet.vsid,), subnet, "virtual_subnet")

        return self._run("CreateVirtualSubnet", context, body)

    def CreateProviderAddress(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            pa = request.provider_address
            violations: dict[str, str] = {}
            _check_ip(violations, "provider_address.pa_ip", pa.pa_ip)
            if violations:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid provider address", violations)
            return self._put(self.pas, (pa.pa_ip,), pa, "provider_address")

        return self._run("CreateProviderAddress", context, body)

    def ListProviderAddresses(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            rows, token = self.pas.page(request, lambda _: True)
            return policy_pb2.ListProviderAddressesResponse(provider_addresses=rows, next_page_token=token)

        return self._run("ListProviderAddresses", context, body)

    # --- lookup records -------------------------------------------------------------------------
    def _record_key(self, record: Any) -> tuple[Any, ...]:
        return (record.vsid, record.ca)

    def CreateLookupRecord(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            record = request.lookup_record
            self._valid_record(record)
            if self._record_key(record) in self.records.rows:
                raise Abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"CA {record.ca} already has a record in VSID {record.vsid}",
                    {"lookup_record.ca": "already used in this VSID"},
                )
            return self._put(self.records, self._record_key(record), record, "lookup_record")

        return self._run("CreateLookupRecord", context, body)

    def GetLookupRecord(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._run("GetLookupRecord", context, lambda: self.records.get(self._record_key(request)))

    def UpdateLookupRecord(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            record = request.lookup_record
            self.records.check_revision(self._record_key(record), request.expected_revision)
            self._valid_record(record)
            return self._put(self.records, self._record_key(record), record, "lookup_record")

        return self._run("UpdateLookupRecord", context, body)

    def DeleteLookupRecord(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._run(
            "DeleteLookupRecord",
            context,
            lambda: self._delete(
                self.records, self._record_key(request), request.expected_revision, "lookup_record"
            ),
        )

    def ListLookupRecords(self, request: Any, context: grpc.ServicerContext) -> Any:
        def keep(record: types_pb2.LookupRecord) -> bool:
            return (
                (not request.vsid or record.vsid == request.vsid)
                and (not request.rdid or record.rdid == request.rdid)
                and (not request.pa or record.pa == request.pa)
            )

        def body() -> Any:
            rows, token = self.records.page(request, keep)
            return policy_pb2.ListLookupRecordsResponse(
                lookup_records=rows, next_page_token=token, revision=self.revision
            )

        return self._run("ListLookupRecords", context, body)

    def BulkApplyLookupRecords(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self._enter("BulkApplyLookupRecords", context)
        applied = 0
        try:
            for message in request_iterator:
                with self.lock:
                    self.bulk_messages += 1
                    for index, record in enumerate(message.upserts):
                        self._valid_record(record, f"upserts[{index}]")
                        self._put(self.records, self._record_key(record), record, "lookup_record")
                        applied += 1
        except Abort as abort:
            context.abort_with_status(abort.status())
        return policy_pb2.BulkApplyLookupRecordsResponse(
            applied=applied, transactions=self.bulk_messages, revision=self.revision
        )

    # --- diagnostics and streams ----------------------------------------------------------------
    def SelectNextHop(self, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            reasons = [f"source {request.source_ca} in VSID {request.vsid}"]
            for record in self.records.rows.values():
                if record.ca == request.destination_ca:
                    reasons.append(f"destination {record.ca} is {record.mac} on PA {record.pa}")
                    return policy_pb2.SelectNextHopResponse(
                        found=True,
                        pa=record.pa,
                        vsid=record.vsid,
                        mac=record.mac,
                        rule=record.rule,
                        record=record,
                        reasons=reasons,
                        source_vsid=request.vsid,
                    )
            reasons.append(f"no lookup record for {request.destination_ca}")
            return policy_pb2.SelectNextHopResponse(found=False, reasons=reasons)

        return self._run("SelectNextHop", context, body)

    def GetTableStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        host = types_pb2.HostStatus(host_name="host-a", pa_ip="198.18.0.1", applied_revision=1, alive=True)
        return self._run(
            "GetTableStatus",
            context,
            lambda: policy_pb2.GetTableStatusResponse(revision=self.revision, hosts=[host]),
        )

    def WatchTable(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._enter("WatchTable", context)
        with self.lock:
            position = request.start_revision or self.revision
        sent = 0
        while context.is_active():
            with self.lock:
                pending = [e for e in self.events if e.revision > position]
                if not pending:
                    self.lock.wait(0.05)
                    continue
                event = pending[0]
            if self.watch_break_after is not None and sent >= self.watch_break_after:
                self.watch_break_after = None
                context.abort_with_status(Abort(grpc.StatusCode.UNAVAILABLE, "watch broken").status())
            position = event.revision
            sent += 1
            yield policy_pb2.WatchTableResponse(events=[event], revision=event.revision)
