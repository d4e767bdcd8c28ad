"""The routing table as every agent (and the policy service's next-hop diagnostic) holds it: pure, no I/O.

``RoutingTable`` keeps the decoded ``StoreEntry`` values of the table keys (docs/key-schema.md) and the
indexes the datapath and ``select_next_hop`` query. It changes only through ``reset`` (a snapshot read
at one revision) and ``update`` (watch events); both return a ``TableDelta`` saying, per key, the entry
before and after, so the datapath can adjust ports and caches without rescanning.

Events: ``update`` takes ``services.common.kv.WatchEvent`` values straight from a watch (the value is
decoded here, and the resource's ``revision`` is set to the key's mod revision) or ``TableChange``
values, a small pure type for callers that already hold decoded entries (tests, the policy service).
A ``TableChange`` with ``entry=None`` is a delete.

Keys outside the table (hosts, indexes, unknown) are ignored. A value that does not decode, or whose
resource does not match its key, is *rejected*: the key is dropped from the table (the store no longer
holds a usable value for it) and the key is reported in ``TableDelta.rejected``.

Entries handed out by the queries are shared with the table: callers must not mutate them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError

from overland.v1 import types_pb2
from services.common import keys
from services.common.errors import DataLoss
from services.common.keys import TableKey, parse_key
from services.common.kv import EventType, KeyValue, WatchEvent

StoreEntry = types_pb2.StoreEntry
T = TypeVar("T")
V = TypeVar("V")

KIND_PA = "pa"
KIND_DOMAIN = "domain"
KIND_SUBNET = "subnet"
KIND_RECORD = "record"
KIND_ROUTE = "route"
KINDS = (KIND_PA, KIND_DOMAIN, KIND_SUBNET, KIND_RECORD, KIND_ROUTE)

# Which StoreEntry oneof field each key kind must carry.
_RESOURCE_OF_KIND = {
    KIND_PA: "provider_address",
    KIND_DOMAIN: "routing_domain",
    KIND_SUBNET: "virtual_subnet",
    KIND_RECORD: "lookup_record",
    KIND_ROUTE: "customer_route",
}


# Values under other prefixes (hosts, indexes) are not StoreEntry resources of the table.
_TABLE_KEY_PREFIXES = (keys.PA_PREFIX, keys.TABLE_PREFIX)


class TableError(DataLoss):
    """A stored value could not be decoded or does not match its key."""


@dataclass(frozen=True)
class TableChange:
    """One change to apply: ``entry`` is the new value, or ``None`` for a delete."""

    key: bytes
    entry: StoreEntry | None
    revision: int = 0


@dataclass(frozen=True)
class EntryChange:
    """The net change of one key: its entry before and after (``None`` when absent)."""

    key: bytes
    kind: str
    before: StoreEntry | None
    after: StoreEntry | None

    @property
    def added(self) -> bool:
        return self.before is None and self.after is not None

    @property
    def removed(self) -> bool:
        return self.before is not None and self.after is None

    @property
    def changed(self) -> bool:
        return self.before is not None and self.after is not None


@dataclass(frozen=True)
class TableDelta:
    """What one ``reset`` or ``update`` changed, in key order, plus the keys it rejected."""

    revision: int
    changes: tuple[EntryChange, ...] = ()
    rejected: tuple[bytes, ...] = ()
    # True for a reset: the datapath may want to revalidate everything it cached.
    reset: bool = False

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def of_kind(self, kind: str) -> tuple[EntryChange, ...]:
        return tuple(c for c in self.changes if c.kind == kind)

    def added(self, kind: str | None = None) -> tuple[EntryChange, ...]:
        return tuple(c for c in self.changes if c.added and (kind is None or c.kind == kind))

    def removed(self, kind: str | None = None) -> tuple[EntryChange, ...]:
        return tuple(c for c in self.changes if c.removed and (kind is None or c.kind == kind))

    def changed(self, kind: str | None = None) -> tuple[EntryChange, ...]:
        return tuple(c for c in self.changes if c.changed and (kind is None or c.kind == kind))

    def kinds(self) -> frozenset[str]:
        return frozenset(c.kind for c in self.changes)


@lru_cache(maxsize=65536)
def ipv4_int(text: str) -> int | None:
    """An IPv4 address as an int, ``None`` when it is not one (cached: CAs repeat on the packet path)."""
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        return None


@lru_cache(maxsize=16384)
def ipv4_network(text: str) -> tuple[int, int] | None:
    """A CIDR prefix as (network int, prefix length), ``None`` when it is not an IPv4 prefix."""
    try:
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return None
    return int(network.network_address), network.prefixlen


def mask_of(length: int) -> int:
    return (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF


def decode_entry(kv: KeyValue) -> StoreEntry:
    """Decode a stored value; the resource's ``revision`` becomes the key's mod revision."""
    entry = StoreEntry()
    try:
        entry.ParseFromString(kv.value)
    except DecodeError as error:
        raise TableError(f"undecodable value under {kv.key!r}: {error}") from error
    resource = entry.WhichOneof("resource")
    if resource is not None:
        getattr(entry, resource).revision = kv.mod_revision
    return entry


def decode_snapshot(kvs: Iterable[KeyValue]) -> dict[bytes, StoreEntry]:
    """Decode a range read for ``reset``; undecodable values are left out (``reset`` drops their keys)."""
    snapshot: dict[bytes, StoreEntry] = {}
    for kv in kvs:
        try:
            snapshot[kv.key] = decode_entry(kv)
        except TableError:
            continue
    return snapshot


def _normalized(table_key: TableKey, entry: StoreEntry) -> StoreEntry | None:
    """The entry with its identity fields filled from the key, ``None`` when they contradict the key.

    The key is the identity the store enforces uniqueness on, so the indexes trust it; output-only
    fields the writer may leave empty (a record's rdid) are filled in from it.
    """
    resource_name = entry.WhichOneof("resource")
    if resource_name != _RESOURCE_OF_KIND[table_key.kind]:
        return None
    resource = getattr(entry, resource_name)
    wanted: dict[str, object]
    if table_key.kind == KIND_PA:
        wanted = {"pa_ip": table_key.pa_ip}
    elif table_key.kind == KIND_DOMAIN:
        wanted = {"rdid": table_key.rdid}
    elif table_key.kind == KIND_SUBNET:
        wanted = {"rdid": table_key.rdid, "vsid": table_key.vsid}
    elif table_key.kind == KIND_RECORD:
        wanted = {"rdid": table_key.rdid, "vsid": table_key.vsid, "ca": table_key.ca}
    else:
        if ipv4_network(resource.destination_prefix) != ipv4_network(table_key.destination_prefix):
            return None
        wanted = {"rdid": table_key.rdid, "vsid": table_key.vsid, "next_hop": table_key.next_hop}
    to_fill = {}
    for name, value in wanted.items():
        current = getattr(resource, name)
        if current == value:
            continue
        if current:
            return None
        to_fill[name] = value
    if not to_fill:
        return entry
    filled = StoreEntry()
    filled.CopyFrom(entry)
    filled_resource = getattr(filled, resource_name)
    for name, value in to_fill.items():
        setattr(filled_resource, name, value)
    return filled


# (index, index key, value): where an entry sits in one of the table's indexes.
_Slot = tuple[dict[Any, dict[bytes, Any]], Any, Any]


@dataclass
class _PrefixIndex(Generic[V]):
    """Longest-prefix match over IPv4 prefixes: length -> network -> values, lengths longest first."""

    by_length: dict[int, dict[int, list[V]]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)

    def add(self, network: int, length: int, value: V) -> None:
        self.by_length.setdefault(length, {}).setdefault(network, []).append(value)

    def freeze(self) -> None:
        self.lengths = sorted(self.by_length, reverse=True)

    def matches(self, address: int) -> Iterator[tuple[int, list[V]]]:
        """(prefix length, values) of every prefix that contains ``address``, longest first."""
        for length in self.lengths:
            values = self.by_length[length].get(address & mask_of(length))
            if values:
                yield length, values


class RoutingTable:
    """The decoded table with indexes kept in sync; see the module docstring for the rules."""

    def __init__(self) -> None:
        self.revision = 0
        self._entries: dict[bytes, StoreEntry] = {}
        self._counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._providers: dict[str, dict[bytes, types_pb2.ProviderAddress]] = {}
        self._domains: dict[str, dict[bytes, types_pb2.RoutingDomain]] = {}
        self._subnets: dict[int, dict[bytes, types_pb2.VirtualSubnet]] = {}
        self._subnets_of: dict[str, dict[bytes, types_pb2.VirtualSubnet]] = {}
        self._records: dict[tuple[int, str], dict[bytes, types_pb2.LookupRecord]] = {}
        self._records_by_mac: dict[tuple[int, str], dict[bytes, types_pb2.LookupRecord]] = {}
        self._records_on_pa: dict[str, dict[bytes, types_pb2.LookupRecord]] = {}
        self._records_of_vsid: dict[int, dict[bytes, types_pb2.LookupRecord]] = {}
        self._wildcards: dict[int, dict[bytes, types_pb2.LookupRecord]] = {}
        self._routes_of: dict[str, dict[bytes, types_pb2.CustomerRoute]] = {}
        # Per routing domain prefix indexes, rebuilt lazily after the domain's subnets or routes change.
        self._subnet_prefixes: dict[str, _PrefixIndex[types_pb2.VirtualSubnet]] = {}
        self._route_prefixes: dict[str, _PrefixIndex[types_pb2.CustomerRoute]] = {}

    # ----- changes -----

    def reset(self, snapshot: Mapping[bytes, StoreEntry], revision: int) -> TableDelta:
        """Replace the content with ``snapshot`` (read at ``revision``); keys that vanished become deletes."""
        changes: dict[bytes, StoreEntry | None] = dict.fromkeys(self._entries)
        changes.update(snapshot)
        delta = self._apply(changes, revision, reset=True)
        self.revision = revision
        return delta

    def update(self, events: Iterable[WatchEvent | TableChange], revision: int | None = None) -> TableDelta:
        """Apply watch events in order and return the net change.

        Events at or below the current revision are already applied and skipped, so replaying a batch
        is harmless. The table's revision becomes ``revision`` when given (a watcher that merges several
        streams passes the revision every stream has reached, which may be below the newest event it
        applied), else the newest event revision; it never goes back.
        """
        changes: dict[bytes, StoreEntry | None] = {}
        rejected: list[bytes] = []
        newest = self.revision
        for event in events:
            if isinstance(event, TableChange):
                key, event_revision, entry = event.key, event.revision, event.entry
            else:
                key, event_revision = event.kv.key, event.kv.mod_revision
                entry = None
                if event.type is EventType.PUT and key.startswith(_TABLE_KEY_PREFIXES):
                    try:
                        entry = decode_entry(event.kv)
                    except TableError:
                        rejected.append(key)
            if event_revision and event_revision <= self.revision:
                continue
            newest = max(newest, event_revision)
            changes[key] = entry
        target = newest if revision is None else max(self.revision, revision)
        delta = self._apply(changes, target, reset=False, rejected=rejected)
        self.revision = target
        return delta

    def _apply(
        self,
        changes: Mapping[bytes, StoreEntry | None],
        revision: int,
        *,
        reset: bool,
        rejected: list[bytes] | None = None,
    ) -> TableDelta:
        rejected = list(rejected or ())
        applied: list[EntryChange] = []
        for key in sorted(changes):
            table_key = parse_key(key)
            if table_key is None or table_key.kind not in _RESOURCE_OF_KIND:
                continue
            after = changes[key]
            if after is not None:
                normalized = _normalized(table_key, after)
                if normalized is None:
                    rejected.append(key)
                after = normalized
            before = self._entries.get(key)
            if before == after:
                continue
            if before is not None:
                self._unindex(key, table_key, before)
                del self._entries[key]
            if after is not None:
                self._entries[key] = after
                self._index(key, table_key, after)
            applied.append(EntryChange(key, table_key.kind, before, after))
        return TableDelta(revision, tuple(applied), tuple(sorted(set(rejected))), reset)

    def _index(self, key: bytes, table_key: TableKey, entry: StoreEntry) -> None:
        self._counts[table_key.kind] += 1
        for index, index_key, value in self._index_slots(table_key, entry):
            index.setdefault(index_key, {})[key] = value
        self._invalidate(table_key)

    def _unindex(self, key: bytes, table_key: TableKey, entry: StoreEntry) -> None:
        self._counts[table_key.kind] -= 1
        for index, index_key, _value in self._index_slots(table_key, entry):
            bucket = index.get(index_key)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del index[index_key]
        self._invalidate(table_key)

    def _index_slots(self, table_key: TableKey, entry: StoreEntry) -> list[_Slot]:
        """Every (index, index key, value) an entry occupies; one definition for add and remove."""
        kind = table_key.kind
        if kind == KIND_PA:
            return [(self._providers, table_key.pa_ip, entry.provider_address)]
        if kind == KIND_DOMAIN:
            return [(self._domains, table_key.rdid, entry.routing_domain)]
        if kind == KIND_SUBNET:
            subnet = entry.virtual_subnet
            return [(self._subnets, table_key.vsid, subnet), (self._subnets_of, table_key.rdid, subnet)]
        if kind == KIND_RECORD:
            record = entry.lookup_record
            slots: list[_Slot] = [
                (self._records, (table_key.vsid, table_key.ca), record),
                (self._records_on_pa, record.pa, record),
                (self._records_of_vsid, table_key.vsid, record),
            ]
            if record.mac:
                slots.append((self._records_by_mac, (table_key.vsid, record.mac.lower()), record))
            if record.type == types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD:
                slots.append((self._wildcards, table_key.vsid, record))
            return slots
        return [(self._routes_of, table_key.rdid, entry.customer_route)]

    def _invalidate(self, table_key: TableKey) -> None:
        if table_key.kind == KIND_SUBNET:
            self._subnet_prefixes.pop(table_key.rdid, None)
        elif table_key.kind == KIND_ROUTE:
            self._route_prefixes.pop(table_key.rdid, None)

    # ----- queries -----

    def entries(self) -> Mapping[bytes, StoreEntry]:
        """Every entry by key (a read-only view), for DumpTable and invariant checks."""
        return self._entries

    def entry(self, key: bytes) -> StoreEntry | None:
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def count(self, kind: str) -> int:
        return self._counts[kind]

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def subnet(self, vsid: int) -> types_pb2.VirtualSubnet | None:
        return _first(self._subnets.get(vsid))

    def subnets_of(self, rdid: str) -> list[types_pb2.VirtualSubnet]:
        return _sorted_values(self._subnets_of.get(rdid))

    def domain(self, rdid: str) -> types_pb2.RoutingDomain | None:
        return _first(self._domains.get(rdid))

    def domains(self) -> list[types_pb2.RoutingDomain]:
        return [d for bucket in self._domains.values() if (d := _first(bucket)) is not None]

    def rdid_of(self, vsid: int) -> str | None:
        """The routing domain of a VSID (from its subnet key), ``None`` when the subnet is unknown."""
        subnet = self.subnet(vsid)
        return subnet.rdid if subnet is not None else None

    def record(self, vsid: int, ca: str) -> types_pb2.LookupRecord | None:
        return _first(self._records.get((vsid, ca)))

    def record_by_mac(self, vsid: int, mac: str) -> types_pb2.LookupRecord | None:
        return _first(self._records_by_mac.get((vsid, mac.lower())))

    def records_on_pa(self, pa: str) -> list[types_pb2.LookupRecord]:
        return _sorted_values(self._records_on_pa.get(pa))

    def records_of_vsid(self, vsid: int) -> list[types_pb2.LookupRecord]:
        return _sorted_values(self._records_of_vsid.get(vsid))

    def wildcard(self, vsid: int) -> types_pb2.LookupRecord | None:
        """The VSID's GATEWAY_WILDCARD record, the fallback for destinations nothing else matches."""
        return _first(self._wildcards.get(vsid))

    def routes_of(self, rdid: str) -> list[types_pb2.CustomerRoute]:
        return _sorted_values(self._routes_of.get(rdid))

    def provider(self, pa_ip: str) -> types_pb2.ProviderAddress | None:
        return _first(self._providers.get(pa_ip))

    def providers(self) -> list[types_pb2.ProviderAddress]:
        return [p for bucket in self._providers.values() if (p := _first(bucket)) is not None]

    def subnet_containing(self, rdid: str, ca: str) -> types_pb2.VirtualSubnet | None:
        """The subnet of ``rdid`` whose CA prefixes hold ``ca`` (the most specific, if they overlap)."""
        address = ipv4_int(ca)
        if address is None:
            return None
        index = self._subnet_prefixes.get(rdid)
        if index is None:
            index = _PrefixIndex[types_pb2.VirtualSubnet]()
            for subnet in self.subnets_of(rdid):
                for prefix in subnet.ca_prefixes:
                    parsed = ipv4_network(prefix)
                    if parsed is not None:
                        index.add(parsed[0], parsed[1], subnet)
            index.freeze()
            self._subnet_prefixes[rdid] = index
        for _length, subnets in index.matches(address):
            return subnets[0]
        return None

    def routes_matching(self, rdid: str, ca: str) -> list[types_pb2.CustomerRoute]:
        """The customer routes of ``rdid`` whose prefix holds ``ca``: longest prefix first, then lowest
        metric, then key order."""
        address = ipv4_int(ca)
        if address is None:
            return []
        index = self._route_prefixes.get(rdid)
        if index is None:
            route_index = _PrefixIndex[types_pb2.CustomerRoute]()
            routes = sorted(self._routes_of.get(rdid, {}).items(), key=lambda item: (item[1].metric, item[0]))
            for _key, route in routes:
                parsed = ipv4_network(route.destination_prefix)
                if parsed is not None:
                    route_index.add(parsed[0], parsed[1], route)
            route_index.freeze()
            self._route_prefixes[rdid] = index = route_index
        found: list[types_pb2.CustomerRoute] = []
        for _length, routes_here in index.matches(address):
            found.extend(routes_here)
        return found


def _first(bucket: Mapping[bytes, T] | None) -> T | None:
    """The value under the smallest key: deterministic even if the store broke a uniqueness invariant."""
    if not bucket:
        return None
    if len(bucket) == 1:
        return next(iter(bucket.values()))
    return bucket[min(bucket)]


def _sorted_values(bucket: Mapping[bytes, T] | None) -> list[T]:
    if not bucket:
        return []
    return [bucket[key] for key in sorted(bucket)]


def wrap(
    resource: types_pb2.RoutingDomain
    | types_pb2.VirtualSubnet
    | types_pb2.ProviderAddress
    | types_pb2.LookupRecord
    | types_pb2.CustomerRoute,
    write_time_unix_nanos: int = 0,
) -> StoreEntry:
    """A resource as the StoreEntry stored under its key."""
    entry = StoreEntry(write_time_unix_nanos=write_time_unix_nanos)
    field_name = {
        types_pb2.RoutingDomain: "routing_domain",
        types_pb2.VirtualSubnet: "virtual_subnet",
        types_pb2.ProviderAddress: "provider_address",
        types_pb2.LookupRecord: "lookup_record",
        types_pb2.CustomerRoute: "customer_route",
    }[type(resource)]
    getattr(entry, field_name).CopyFrom(resource)
    return entry


def key_of(entry: StoreEntry) -> bytes:
    """The table key an entry is stored under (docs/key-schema.md)."""
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
    raise TableError(f"no table key for a StoreEntry holding {resource!r}")
