"""Encoding of policy resources as the StoreEntry values of docs/key-schema.md (pure).

``build_entry`` is the one place an entry is made, so the writer's trace context can be hooked in
there; decoding checks that the entry holds the kind of resource its key says.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from overland.v1 import types_pb2
from services.common.kv import KeyValue
from services.common.protowire import LEN, VARINT, field_key, varint
from services.policy.errors import CorruptEntry

Resource = (
    types_pb2.RoutingDomain
    | types_pb2.VirtualSubnet
    | types_pb2.ProviderAddress
    | types_pb2.LookupRecord
    | types_pb2.CustomerRoute
    | types_pb2.HostStatus
)
R = TypeVar("R", bound=Message)

# The StoreEntry oneof field that holds each resource type.
_FIELD_OF: dict[str, str] = {
    "RoutingDomain": "routing_domain",
    "VirtualSubnet": "virtual_subnet",
    "ProviderAddress": "provider_address",
    "LookupRecord": "lookup_record",
    "CustomerRoute": "customer_route",
    "HostStatus": "host_status",
}


def build_entry(
    resource: Resource, write_time_unix_nanos: int, trace: types_pb2.TraceContext | None = None
) -> types_pb2.StoreEntry:
    """The StoreEntry for a resource. Its output-only ``revision`` is cleared: etcd's mod revision
    is the truth, and it is set again on every read."""
    if isinstance(resource, types_pb2.LookupRecord) and not resource.revision and trace is None:
        # Bulk loads make hundreds of thousands of these: the direct form is the fast one.
        return types_pb2.StoreEntry(lookup_record=resource, write_time_unix_nanos=write_time_unix_nanos)
    entry = types_pb2.StoreEntry(write_time_unix_nanos=write_time_unix_nanos)
    if trace is not None:
        entry.trace.CopyFrom(trace)
    stored = getattr(entry, _FIELD_OF[type(resource).__name__])
    stored.CopyFrom(resource)
    if not isinstance(stored, types_pb2.HostStatus):
        stored.revision = 0
    return entry


def encode_entry(
    resource: Resource, write_time_unix_nanos: int, trace: types_pb2.TraceContext | None = None
) -> bytes:
    if (
        trace is None
        and write_time_unix_nanos > 0
        and isinstance(resource, types_pb2.LookupRecord)
        and not resource.revision
    ):
        # Bulk loads store hundreds of thousands of records: the record's own bytes framed as
        # StoreEntry field 4, then field 21, are what protobuf writes for the entry, without
        # first copying the record into one (2.5x faster; tests/unit/policy/test_entries.py
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


def decode_entry(value: bytes, key: bytes = b"") -> types_pb2.StoreEntry:
    entry = types_pb2.StoreEntry()
    try:
        entry.ParseFromString(value)
    except DecodeError as error:
        raise CorruptEntry(f"value of {key.decode(errors='replace')} is not a StoreEntry: {error}") from error
    return entry


def resource_from(kv: KeyValue, kind: type[R]) -> R:
    """The resource stored in ``kv``, with ``revision`` set to the key's mod revision."""
    entry = decode_entry(kv.value, kv.key)
    field = _FIELD_OF[kind.__name__]
    if entry.WhichOneof("resource") != field:
        raise CorruptEntry(
            f"{kv.key.decode(errors='replace')} holds {entry.WhichOneof('resource')}, expected {field}"
        )
    # The entry is private to this call, so its sub-message can be handed out without a copy.
    resource: R = getattr(entry, field)
    if not isinstance(resource, types_pb2.HostStatus):
        resource.revision = kv.mod_revision  # type: ignore[attr-defined]
    return resource
