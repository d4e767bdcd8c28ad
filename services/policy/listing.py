"""The List calls' paging over the table: pages pinned to one store revision, filtered scans, and
listings that walk the routing domains one by one.

Every page of a listing reads the snapshot of its first page (the revision is in the page token,
services/policy/paging.py); a snapshot that etcd has compacted since is FAILED_PRECONDITION. A value
the service cannot read is left out of the page and named in it (services/policy/unreadable.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from overland.v1 import types_pb2
from services.common.kv import KV, KeyValue, KVCompactedError, RangeResult, prefix_end
from services.common.schema import keys
from services.policy.errors import PolicyConflict
from services.policy.paging import PageCursor, encode_page_token, parse_page
from services.policy.unreadable import UnreadableEntries

R = TypeVar("R", bound=Message)

# Keys a filtered listing (or another scan of the table) reads per etcd call.
SCAN_CHUNK = 1000
# Unreadable values one page names (past that they are still skipped, logged and counted).
MAX_UNREADABLE_PER_PAGE = 100


@dataclass(frozen=True)
class ListPage(Generic[R]):
    """One page of a listing: the resources, the token of the next page ("" at the end), the
    store revision every page of the listing was read at, and the unreadable values it skipped."""

    items: list[R]
    next_page_token: str
    revision: int
    unreadable: list[types_pb2.UnreadableEntry] = field(default_factory=list)


@dataclass
class _Listing(Generic[R]):
    """A page being filled: what it lists, how many, and the revision it is pinned to (0 until the
    first read)."""

    kind: type[R]
    size: int
    wanted: Callable[[R], bool]
    revision: int
    items: list[R] = field(default_factory=list)
    unreadable: list[types_pb2.UnreadableEntry] = field(default_factory=list)

    @property
    def room(self) -> int:
        return self.size - len(self.items)

    def page(self, resume: bytes | None) -> ListPage[R]:
        token = encode_page_token(self.revision, resume) if resume is not None else ""
        return ListPage(self.items, token, self.revision, self.unreadable[:MAX_UNREADABLE_PER_PAGE])


def _all(_resource: object) -> bool:
    return True


class TableListing:
    """Pages of one kind of resource, read from a ``KV``; unreadable values go to ``unreadable``."""

    def __init__(self, kv: KV, unreadable: UnreadableEntries) -> None:
        self._kv = kv
        self._unreadable = unreadable

    def under_prefix(
        self,
        page: types_pb2.PageRequest,
        prefix: bytes,
        kind: type[R],
        wanted: Callable[[R], bool] | None = None,
    ) -> ListPage[R]:
        """The resources under one key prefix that ``wanted`` keeps (all of them by default)."""
        parsed = parse_page(page, prefix)
        cursor = parsed.cursor or PageCursor(0, prefix)
        listing = _Listing(kind, parsed.size, wanted or _all, cursor.revision)
        resume = self._collect(listing, prefix, cursor.start)
        return listing.page(resume)

    def across_domains(
        self,
        page: types_pb2.PageRequest,
        prefix_of: Callable[[str], bytes],
        kind: type[R],
        only_rdid: str | None = None,
        wanted: Callable[[R], bool] | None = None,
        *,
        admit: Callable[[KeyValue], bool] | None = None,
    ) -> ListPage[R]:
        """List one kind of key of every routing domain (``prefix_of(rdid)``), domain by domain (the
        table is kept per domain, so this skips from one domain to the next instead of scanning all
        of them). ``admit``: whether a domain is listed at all, given its first key (its domain key:
        a tenant's filter, services/policy/tenancy.py); it is asked of a page token's domain too, as a
        token is the caller's to forge."""
        scope = keys.domain_prefix(only_rdid) if only_rdid else keys.TABLE_PREFIX
        parsed = parse_page(page, scope)
        listing = _Listing(kind, parsed.size, wanted or _all, parsed.cursor.revision if parsed.cursor else 0)
        start = parsed.cursor.start if parsed.cursor else None
        rdid = keys.domain_of(start) if start else None
        if rdid is not None and admit is not None and not self._admitted(listing, rdid, admit):
            rdid = self._next_domain(listing, scope, rdid, admit)
            start = None
        if rdid is None:
            rdid = self._next_domain(listing, scope, None, admit)
            start = None
        while rdid is not None:
            resume = self._collect(listing, prefix_of(rdid), start)
            if resume is not None:
                return listing.page(resume)
            rdid = self._next_domain(listing, scope, rdid, admit)
            start = None
            if rdid is not None and listing.room <= 0:
                return listing.page(prefix_of(rdid))
        if not listing.revision:
            listing.revision = self._kv.current_revision()
        return listing.page(None)

    def between(self, prefix: bytes, first: bytes, last: bytes, revision: int) -> list[KeyValue]:
        """Every key under ``prefix`` from ``first`` to ``last`` (both inclusive), at ``revision``."""
        found: list[KeyValue] = []
        start: bytes | None = first
        while start is not None:
            chunk = self._range(prefix, start, SCAN_CHUNK, revision)
            for kv in chunk.kvs:
                if kv.key > last:
                    return found
                found.append(kv)
            start = chunk.kvs[-1].key + b"\0" if chunk.more and chunk.kvs else None
        return found

    def _range(self, prefix: bytes, start: bytes | None, limit: int, revision: int) -> RangeResult:
        try:
            return self._kv.range(prefix, start=start, limit=limit, revision=revision)
        except KVCompactedError as error:
            raise PolicyConflict(
                f"the listing's snapshot at revision {revision} was compacted (compacted up to "
                f"{error.compact_revision}); start the listing again without a page token"
            ) from error

    def _collect(self, listing: _Listing[R], prefix: bytes, start: bytes | None) -> bytes | None:
        """Add wanted resources under ``prefix`` to ``listing`` until it is full; returns the key to
        resume at, or None when the prefix is exhausted."""
        while True:
            limit = listing.room if listing.wanted is _all else SCAN_CHUNK
            chunk = self._range(prefix, start, max(limit, 1), listing.revision)
            listing.revision = listing.revision or chunk.revision
            for kv in chunk.kvs:
                if listing.room <= 0:
                    return kv.key
                resource = self._unreadable.read(kv, listing.kind, "list", listing.unreadable)
                if resource is not None and listing.wanted(resource):
                    listing.items.append(resource)
            if not chunk.more or not chunk.kvs:
                return None
            start = chunk.kvs[-1].key + b"\0"
            if listing.room <= 0:
                return start

    def _next_domain(
        self,
        listing: _Listing[Any],
        scope: bytes,
        after: str | None,
        admit: Callable[[KeyValue], bool] | None = None,
    ) -> str | None:
        start = keys.TABLE_PREFIX if after is None else prefix_end(keys.domain_prefix(after))
        while True:
            found = self._range(scope, start, 1, listing.revision)
            listing.revision = listing.revision or found.revision
            if not found.kvs:
                return None
            rdid = keys.domain_of(found.kvs[0].key)
            if rdid is None or admit is None or admit(found.kvs[0]):
                return rdid
            start = prefix_end(keys.domain_prefix(rdid))

    def _admitted(self, listing: _Listing[Any], rdid: str, admit: Callable[[KeyValue], bool]) -> bool:
        found = self._range(keys.domain_prefix(rdid), None, 1, listing.revision)
        listing.revision = listing.revision or found.revision
        return bool(found.kvs) and admit(found.kvs[0])
