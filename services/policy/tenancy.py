"""The policy store's tenant filter: what a tenant identity's call may reach (docs/security.md).

A call that ``services.policy.access`` grants a tenant ``Grant.OWN`` reaches only routing domains
whose ``tenant_name`` is the tenant's, and what lies in them. The store takes a ``TenantFilter``
(``owner``) on those calls and asks it where a decision needs a stored object: whether a domain is
the tenant's, which domain a VSID of the tenant's is in. To the tenant, another tenant's domain, and
every subnet, record and route in it, is one that does not exist: gets answer ``NOT_FOUND``, writes
the error of a missing subnet or domain, listings and watches leave them out. ``NOT_FOUND`` rather
than ``PERMISSION_DENIED``: a refusal would tell a tenant that an RDID or VSID is someone's, and VSIDs
are few enough (2^24) to enumerate. (A VSID is unique across domains, so creating a subnet with a VSID
another tenant holds still fails ``ALREADY_EXISTS``: the number is taken; whose, the message does not
say.)

Where a write's decision rests on which domain a VSID is in, the store's transaction compares the
VSID index (a record's write, a move, a subnet's delete): the domain it checked is the domain it
writes in. Which tenant a domain belongs to is read when first asked and not compared: only an admin
changes it, and a write racing that change is one the tenant made while the domain was its own.

Keys are kept per routing domain (docs/key-schema.md), and the first key under a domain's prefix is
its ``domain`` key: a listing across domains tells a domain's tenant from the key it reads anyway.
"""

from __future__ import annotations

from collections.abc import Callable

from overland.v1 import types_pb2
from services.common.kv import KV, KeyValue
from services.common.schema import CorruptEntry, keys, resource_from


class TenantFilter:
    """One call's view of which routing domains are ``tenant``'s, read through ``kv`` and kept for the
    call (a watch learns changes from its own events)."""

    def __init__(self, kv: KV, tenant: str) -> None:
        self.kv = kv
        self.tenant = tenant
        self._domains: dict[str, bool] = {}
        self._vsids: dict[int, bytes] = {}

    def owns_domain(self, domain: types_pb2.RoutingDomain) -> bool:
        return domain.tenant_name == self.tenant

    def owns_value(self, kv: KeyValue | None) -> bool:
        """Whether ``kv``, a domain key as stored, is one of the tenant's (an unreadable one is not)."""
        if kv is None:
            return False
        try:
            return self.owns_domain(resource_from(kv, types_pb2.RoutingDomain))
        except CorruptEntry:
            return False

    def owns(self, rdid: str) -> bool:
        """Whether routing domain ``rdid`` exists and is the tenant's."""
        known = self._domains.get(rdid)
        if known is None:
            known = self._domains[rdid] = self.owns_value(self.kv.get(keys.domain_key(rdid)))
        return known

    def admits(self, first: KeyValue) -> bool:
        """For a listing across domains: whether the domain whose first key is ``first`` (its domain
        key, read at the listing's revision) is the tenant's."""
        parsed = keys.parse_key(first.key)
        if parsed is None or parsed.kind != keys.KIND_DOMAIN:
            return False
        owned = self._domains[parsed.rdid] = self.owns_value(first)
        return owned

    def domain_of(self, vsid: int) -> bytes:
        """The RDID (UTF-8) of the tenant's domain that holds VSID ``vsid``; b"" when no domain of the
        tenant's does (a record write's ``RecordChange.domain``)."""
        known = self._vsids.get(vsid)
        if known is None:
            index = self.kv.get(keys.vsid_index_key(vsid))
            known = index.value if index is not None and self.owns(index.value.decode()) else b""
            self._vsids[vsid] = known
        return known

    def sees_event(self, key: bytes, value: KeyValue | None) -> bool:
        """For a watch: whether the tenant sees a change of table key ``key`` (``value``: the domain
        key as written, None for a delete). A domain key's change teaches the filter its new owner
        first, so a domain handed to the tenant shows from that change on and one taken away stops."""
        parsed = keys.parse_key(key)
        if parsed is None or not parsed.rdid:
            return False
        if parsed.kind == keys.KIND_DOMAIN:
            seen = self._domains.get(parsed.rdid, False)
            self._domains[parsed.rdid] = self.owns_value(value)
            # The delete of its own domain, or the change that takes it away, is the last it sees.
            return seen or self._domains[parsed.rdid]
        return self.owns(parsed.rdid)


def admitter(tenant: TenantFilter | None) -> Callable[[KeyValue], bool] | None:
    """A listing's domain filter for ``tenant`` (None: every domain)."""
    return tenant.admits if tenant is not None else None


def domain_for(tenant: TenantFilter | None, vsid: int) -> bytes | None:
    """A record write's ``RecordChange.domain`` for ``tenant`` (None: any domain)."""
    return tenant.domain_of(vsid) if tenant is not None else None
