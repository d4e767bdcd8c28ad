"""The routing table as every agent (and the policy service's next-hop diagnostic) holds it: pure, no I/O.

``RoutingTable`` keeps the decoded ``StoreEntry`` values of the table keys (docs/key-schema.md, whose
keys and entries ``services.common.schema`` parses and decodes) and the indexes the datapath and
``select_next_hop`` query. It changes only through ``reset`` (a snapshot read at one revision) and
``update`` (watch events); both return a ``TableDelta`` saying, per key, the entry before and after,
so the datapath can adjust ports and caches without rescanning.

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
from typing import Any, Generic, NamedTuple, TypeVar

from overland.v1 import types_pb2
from services.common.kv import EventType, WatchEvent
from services.common.schema import keys
from services.common.schema.entries import FIELD_OF_KIND, CorruptEntry, StoreEntry, read_entry
from services.common.schema.keys import (
    KIND_DOMAIN,
    KIND_PA,
    KIND_RECORD,
    KIND_SUBNET,
    TABLE_KINDS,
    KeyKind,
    TableKey,
    parse_key,
)

V = TypeVar("V")

# Values under other prefixes (hosts, indexes) are not StoreEntry resources of the table.
_TABLE_KEY_PREFIXES = (keys.PA_PREFIX, keys.TABLE_PREFIX)
_IN_TABLE = frozenset(TABLE_KINDS)


@dataclass(frozen=True)
class TableChange:
    """One change to apply: ``entry`` is the new value, or ``None`` for a delete."""

    key: bytes
    entry: StoreEntry | None
    revision: int = 0


class EntryChange(NamedTuple):
    """The net change of one key: its entry before and after (``None`` when absent)."""

    key: bytes
    kind: KeyKind
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


def _normalized(table_key: TableKey, entry: StoreEntry) -> StoreEntry | None:
    """The entry with its identity fields filled from the key, ``None`` when they contradict the key.

    The key is the identity the store enforces uniqueness on, so the indexes trust it; fields the
    writer may leave empty (a record's output-only rdid) are filled in from it.
    """
    kind = table_key.kind
    if entry.WhichOneof("resource") != FIELD_OF_KIND[kind]:
        return None
    wanted: tuple[tuple[str, object], ...]
    if kind == KIND_RECORD:
        record = entry.lookup_record
        if record.vsid == table_key.vsid and record.ca == table_key.ident and record.rdid == table_key.rdid:
            return entry
        wanted = (("rdid", table_key.rdid), ("vsid", table_key.vsid), ("ca", table_key.ident))
    elif kind == KIND_PA:
        wanted = (("pa_ip", table_key.ident),)
    elif kind == KIND_DOMAIN:
        wanted = (("rdid", table_key.rdid),)
    elif kind == KIND_SUBNET:
        wanted = (("rdid", table_key.rdid), ("vsid", table_key.vsid))
    else:
        if ipv4_network(entry.customer_route.destination_prefix) != ipv4_network(table_key.ident):
            return None
        wanted = (("rdid", table_key.rdid), ("vsid", table_key.vsid), ("next_hop", table_key.next_hop))
    resource = getattr(entry, FIELD_OF_KIND[kind])
    to_fill = []
    for name, value in wanted:
        current = getattr(resource, name)
        if current == value:
            continue
        if current:
            return None
        to_fill.append((name, value))
    if not to_fill:
        return entry
    filled = StoreEntry()
    filled.CopyFrom(entry)
    filled_resource = getattr(filled, FIELD_OF_KIND[kind])
    for name, value in to_fill:
        setattr(filled_resource, name, value)
    return filled


# An index maps an index key to its entries' values. A bucket holding one entry is stored as a
# (table key, value) pair, more as a dict: almost every bucket of the unique indexes holds one, and a
# dict per record would double the table's memory.
_Index = dict[Any, Any]


def _index_add(index: _Index, index_key: object, key: bytes, value: object) -> None:
    bucket = index.get(index_key)
    if bucket is None:
        index[index_key] = (key, value)
    elif type(bucket) is tuple:
        index[index_key] = {bucket[0]: bucket[1], key: value} if bucket[0] != key else (key, value)
    else:
        bucket[key] = value


def _index_remove(index: _Index, index_key: object, key: bytes) -> None:
    bucket = index.get(index_key)
    if bucket is None:
        return
    if type(bucket) is tuple:
        if bucket[0] == key:
            del index[index_key]
        return
    bucket.pop(key, None)
    if len(bucket) == 1:
        index[index_key] = next(iter(bucket.items()))


def _index_first(index: _Index, index_key: object) -> Any:
    """The value under the smallest table key: deterministic even if the store broke a uniqueness
    invariant and two entries claim one index key."""
    bucket = index.get(index_key)
    if bucket is None:
        return None
    if type(bucket) is tuple:
        return bucket[1]
    return bucket[min(bucket)]


def _index_values(index: _Index, index_key: object) -> list[Any]:
    """Every value under ``index_key`` in table-key order."""
    bucket = index.get(index_key)
    if bucket is None:
        return []
    if type(bucket) is tuple:
        return [bucket[1]]
    return [bucket[key] for key in sorted(bucket)]


def _all_firsts(index: _Index) -> list[Any]:
    return [_index_first(index, index_key) for index_key in index]


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
        # The revision of the last reset, or the newest event revision of an update that changed
        # anything since (an upper bound of the newest change): the agent publishes its applied
        # revision only until it reaches this, so writes outside the table (other hosts' status) do
        # not make every host write again.
        self.change_revision = 0
        self._entries: dict[bytes, StoreEntry] = {}
        self._counts: dict[str, int] = dict.fromkeys(TABLE_KINDS, 0)
        # Indexes (see _index_add): pa_ip, rdid, vsid, rdid, (vsid, ca), (vsid, mac), pa, vsid, vsid, rdid.
        self._providers: _Index = {}
        self._domains: _Index = {}
        self._subnets: _Index = {}
        self._subnets_of: _Index = {}
        self._records: _Index = {}
        self._records_by_mac: _Index = {}
        self._records_on_pa: _Index = {}
        self._records_of_vsid: _Index = {}
        self._wildcards: _Index = {}
        self._routes_of: _Index = {}
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
        self.change_revision = revision
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
                        entry = read_entry(event.kv)
                    except CorruptEntry:
                        rejected.append(key)
            if event_revision and event_revision <= self.revision:
                continue
            newest = max(newest, event_revision)
            changes[key] = entry
        target = newest if revision is None else max(self.revision, revision)
        delta = self._apply(changes, target, reset=False, rejected=rejected)
        self.revision = target
        if delta:
            self.change_revision = max(self.change_revision, newest)
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
        entries = self._entries
        for key in sorted(changes):
            table_key = parse_key(key)
            if table_key is None or table_key.kind not in _IN_TABLE:
                continue
            after = changes[key]
            if after is not None:
                normalized = _normalized(table_key, after)
                if normalized is None:
                    rejected.append(key)
                after = normalized
            before = entries.get(key)
            if before is None and after is None:
                continue
            if before is not None:
                if before == after:
                    continue
                self._index(key, table_key, before, add=False)
                del entries[key]
            if after is not None:
                entries[key] = after
                self._index(key, table_key, after, add=True)
            applied.append(EntryChange(key, table_key.kind, before, after))
        return TableDelta(revision, tuple(applied), tuple(sorted(set(rejected))), reset)

    def _index(self, key: bytes, table_key: TableKey, entry: StoreEntry, *, add: bool) -> None:
        """Add an entry to (or remove it from) every index it belongs to; one list of slots for both."""
        kind = table_key.kind
        slots: tuple[tuple[_Index, object, object], ...]
        if kind == KIND_RECORD:
            record = entry.lookup_record
            vsid = table_key.vsid
            slots = (
                (self._records, (vsid, table_key.ident), record),
                (self._records_on_pa, record.pa, record),
                (self._records_of_vsid, vsid, record),
            )
            if record.mac:
                slots += ((self._records_by_mac, (vsid, record.mac.lower()), record),)
            if record.type == types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD:
                slots += ((self._wildcards, vsid, record),)
        elif kind == KIND_PA:
            slots = ((self._providers, table_key.ident, entry.provider_address),)
        elif kind == KIND_DOMAIN:
            slots = ((self._domains, table_key.rdid, entry.routing_domain),)
        elif kind == KIND_SUBNET:
            slots = (
                (self._subnets, table_key.vsid, entry.virtual_subnet),
                (self._subnets_of, table_key.rdid, entry.virtual_subnet),
            )
            self._subnet_prefixes.pop(table_key.rdid, None)
        else:
            slots = ((self._routes_of, table_key.rdid, entry.customer_route),)
            self._route_prefixes.pop(table_key.rdid, None)
        if add:
            self._counts[kind] += 1
            for index, index_key, value in slots:
                # The common case inline: a cold sync adds several index entries per record.
                if index_key not in index:
                    index[index_key] = (key, value)
                else:
                    _index_add(index, index_key, key, value)
        else:
            self._counts[kind] -= 1
            for index, index_key, _value in slots:
                _index_remove(index, index_key, key)

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
        return _index_first(self._subnets, vsid)

    def subnets_of(self, rdid: str) -> list[types_pb2.VirtualSubnet]:
        return _index_values(self._subnets_of, rdid)

    def domain(self, rdid: str) -> types_pb2.RoutingDomain | None:
        return _index_first(self._domains, rdid)

    def domains(self) -> list[types_pb2.RoutingDomain]:
        return _all_firsts(self._domains)

    def rdid_of(self, vsid: int) -> str | None:
        """The routing domain of a VSID (from its subnet key), ``None`` when the subnet is unknown."""
        subnet = self.subnet(vsid)
        return subnet.rdid if subnet is not None else None

    def record(self, vsid: int, ca: str) -> types_pb2.LookupRecord | None:
        return _index_first(self._records, (vsid, ca))

    def record_by_mac(self, vsid: int, mac: str) -> types_pb2.LookupRecord | None:
        return _index_first(self._records_by_mac, (vsid, mac.lower()))

    def records_on_pa(self, pa: str) -> list[types_pb2.LookupRecord]:
        return _index_values(self._records_on_pa, pa)

    def records_of_vsid(self, vsid: int) -> list[types_pb2.LookupRecord]:
        return _index_values(self._records_of_vsid, vsid)

    def wildcard(self, vsid: int) -> types_pb2.LookupRecord | None:
        """The VSID's GATEWAY_WILDCARD record, the fallback for destinations nothing else matches."""
        return _index_first(self._wildcards, vsid)

    def routes_of(self, rdid: str) -> list[types_pb2.CustomerRoute]:
        return _index_values(self._routes_of, rdid)

    def provider(self, pa_ip: str) -> types_pb2.ProviderAddress | None:
        return _index_first(self._providers, pa_ip)

    def providers(self) -> list[types_pb2.ProviderAddress]:
        return _all_firsts(self._providers)

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
            # A stable sort: equal metrics keep table-key order.
            routes = sorted(_index_values(self._routes_of, rdid), key=lambda route: route.metric)
            for route in routes:
                parsed = ipv4_network(route.destination_prefix)
                if parsed is not None:
                    route_index.add(parsed[0], parsed[1], route)
            route_index.freeze()
            self._route_prefixes[rdid] = index = route_index
        found: list[types_pb2.CustomerRoute] = []
        for _length, routes_here in index.matches(address):
            found.extend(routes_here)
        return found
