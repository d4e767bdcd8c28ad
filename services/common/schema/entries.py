"""The StoreEntry values of docs/key-schema.md: the one codec of the table's resources (pure).

Every value under a schema key is a ``StoreEntry`` holding one resource. Writers make it with
``build_entry`` or ``encode_entry`` (the one place an entry is made, so the writer's trace context is
hooked in there); readers decode it with ``decode_entry`` (bytes), ``read_entry`` (a KeyValue: the
resource's ``revision`` becomes the key's mod revision) or ``resource_from`` (which also checks that
the entry holds the kind of resource its caller expects). A value that does not decode, or does not
hold what it should, is ``CorruptEntry``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from overland.v1 import types_pb2
from services.common.errors import DataLoss
from services.common.kv import KeyValue
from services.common.protowire import LEN, VARINT, field_key, varint
from services.common.schema import keys
from services.common.schema.keys import KeyKind

StoreEntry = types_pb2.StoreEntry
Resource = (
    types_pb2.RoutingDomain
    | types_pb2.VirtualSubnet
    | types_pb2.ProviderAddress
    | types_pb2.LookupRecord
    | types_pb2.CustomerRoute
    | types_pb2.HostStatus
    | types_pb2.Host
)
R = TypeVar("R", bound=Message)


class CorruptEntry(DataLoss):
    """A stored key or value is not what the schema says: a value that is not a StoreEntry, or an
    entry that does not hold the resource its key (or its reader) expects."""


# The schema's one map of resources: each resource type, the StoreEntry oneof field that holds it,
# and the kind of key it is stored under.
_RESOURCES: tuple[tuple[type[Message], str, KeyKind], ...] = (
    (types_pb2.RoutingDomain, "routing_domain", keys.KIND_DOMAIN),
    (types_pb2.VirtualSubnet, "virtual_subnet", keys.KIND_SUBNET),
    (types_pb2.ProviderAddress, "provider_address", keys.KIND_PA),
    (types_pb2.LookupRecord, "lookup_record", keys.KIND_RECORD),
    (types_pb2.CustomerRoute, "customer_route", keys.KIND_ROUTE),
    (types_pb2.HostStatus, "host_status", keys.KIND_HOST),
    (types_pb2.Host, "host", keys.KIND_REGISTRATION),
)
FIELD_OF_TYPE: dict[type[Message], str] = {kind: field for kind, field, _ in _RESOURCES}
FIELD_OF_KIND: dict[KeyKind, str] = {key_kind: field for _, field, key_kind in _RESOURCES}


def wrap(resource: Resource, write_time_unix_nanos: int = 0) -> StoreEntry:
    """A copy of ``resource``, as it is, in a StoreEntry (tables built in memory keep revisions)."""
    entry = StoreEntry(write_time_unix_nanos=write_time_unix_nanos)
    getattr(entry, FIELD_OF_TYPE[type(resource)]).CopyFrom(resource)
    return entry


def build_entry(
    resource: Resource, write_time_unix_nanos: int, trace: types_pb2.TraceContext | None = None
) -> StoreEntry:
    """The StoreEntry to store for a resource. Its output-only ``revision`` is cleared: etcd's mod
    revision is the truth, and it is set again on every read."""
    if isinstance(resource, types_pb2.LookupRecord) and not resource.revision and trace is None:
        # Bulk loads make hundreds of thousands of these: the direct form is the fast one.
        return StoreEntry(lookup_record=resource, write_time_unix_nanos=write_time_unix_nanos)
    entry = StoreEntry(write_time_unix_nanos=write_time_unix_nanos)
    if trace is not None:
        entry.trace.CopyFrom(trace)
    stored = getattr(entry, FIELD_OF_TYPE[type(resource)])
    stored.CopyFrom(resource)
    if not isinstance(stored, types_pb2.HostStatus):
        stored.revision = 0
    return entry


def encode_entry(
    resource: Resource, write_time_unix_nanos: int, trace: types_pb2.TraceContext | None = None
) -> bytes:
    """The stored bytes of ``build_entry``."""
    if (
        trace is None
        and write_time_unix_nanos > 0
        and isinstance(resource, types_pb2.LookupRecord)
        and not resource.revision
    ):
        # Bulk loads store hundreds of thousands of records: the record's own bytes framed as
        # StoreEntry field 4, then field 21, are what protobuf writes for the entry, without
        # first copying the record into one (2.5x faster; tests/unit/common/test_schema_entries.py
        # checks the bytes).
        body = resource.SerializeToString()
        return _LOOKUP_RECORD_TAG + varint(len(body)) + body + _write_time_field(write_time_unix_nanos)
    return build_entry(resource, write_time_unix_nanos, trace).SerializeToString()


# StoreEntry.lookup_record and write_time_unix_nanos.
_LOOKUP_RECORD_TAG = field_key(4, LEN)
_WRITE_TIME_TAG = field_key(21, VARINT)


@lru_cache(maxsize=64)
def _write_time_field(write_time_unix_nanos: int) -> bytes:
    """Field 21 of an entry; a transaction's records share one write time, so it is built once."""
    return _WRITE_TIME_TAG + varint(write_time_unix_nanos)


def decode_entry(value: bytes, key: bytes = b"") -> StoreEntry:
    """The StoreEntry of a stored value, as stored (revisions cleared)."""
    entry = StoreEntry()
    try:
        entry.ParseFromString(value)
    except DecodeError as error:
        raise CorruptEntry(f"value of {key.decode(errors='replace')} is not a StoreEntry: {error}") from error
    return entry


def read_entry(kv: KeyValue) -> StoreEntry:
    """The StoreEntry of a key-value; its resource's ``revision`` becomes the key's mod revision."""
    entry = decode_entry(kv.value, kv.key)
    resource = entry.WhichOneof("resource")
    if resource is not None and resource != "host_status":
        getattr(entry, resource).revision = kv.mod_revision
    return entry


def decode_snapshot(kvs: Iterable[KeyValue]) -> dict[bytes, StoreEntry]:
    """The entries of a range read, by key, for ``RoutingTable.reset``; values that do not decode
    are left out (the reset then drops their keys)."""
    snapshot: dict[bytes, StoreEntry] = {}
    for kv in kvs:
        try:
            snapshot[kv.key] = read_entry(kv)
        except CorruptEntry:
            continue
    return snapshot


def resource_from(kv: KeyValue, kind: type[R]) -> R:
    """The resource stored in ``kv``, with ``revision`` set to the key's mod revision."""
    entry = decode_entry(kv.value, kv.key)
    field = FIELD_OF_TYPE[kind]
    if entry.WhichOneof("resource") != field:
        raise CorruptEntry(
            f"{kv.key.decode(errors='replace')} holds {entry.WhichOneof('resource')}, expected {field}"
        )
    # The entry is private to this call, so its sub-message can be handed out without a copy.
    resource: R = getattr(entry, field)
    if not isinstance(resource, types_pb2.HostStatus):
        resource.revision = kv.mod_revision  # type: ignore[attr-defined]
    return resource


def key_of(entry: StoreEntry) -> bytes:
    """The key an entry is stored under."""
    resource = entry.WhichOneof("resource")
    if resource == "provider_address":
        return keys.pa_key(entry.provider_address.pa_ip)
    if resource == "routing_domain":
        return keys.domain_key(entry.routing_domain.rdid)
    if resource == "virtual_subnet":
        return keys.subnet_key(entry.virtual_subnet.rdid, entry.virtual_subnet.vsid)
    if resource == "lookup_record":
        record = entry.lookup_record
        return keys.record_key(record.rdid, record.vsid, record.ca)
    if resource == "customer_route":
        route = entry.customer_route
        return keys.route_key(route.rdid, route.vsid, route.destination_prefix, route.next_hop)
    if resource == "host_status":
        return keys.host_key(entry.host_status.host_name)
    if resource == "host":
        return keys.registration_key(entry.host.host_name)
    raise CorruptEntry(f"no key for a StoreEntry holding {resource!r}")
