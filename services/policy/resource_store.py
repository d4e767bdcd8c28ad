"""The policy store's plumbing for single resources (``PolicyStore`` is built on it): a resource
read by key, and its optimistic create, update and delete, each one etcd transaction that compares
what its decision read and decides again when another writer got there first."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from services.common.errors import FieldViolation
from services.common.kv import KV, Compare, Delete, KeyValue, Op, Put
from services.common.schema import Resource, keys, resource_from
from services.policy import validation
from services.policy.errors import ResourceExists, ResourceNotFound, StaleRevision
from services.policy.tenancy import TenantFilter
from services.policy.txns import TableTxns

R = TypeVar("R", bound=Message)

# What a delete's dependents check adds to the delete: compares and ops.
Guard = tuple[list[Compare], list[Op]]


class ResourceStore:
    """Single-resource reads and writes over ``kv`` through ``_txns``."""

    kv: KV
    _txns: TableTxns

    def _get_resource(self, key: bytes, kind: type[R], what: str) -> R:
        found = self.kv.get(key)
        if found is None:
            raise ResourceNotFound(f"{what} does not exist")
        return resource_from(found, kind)

    def _rdid_of(self, vsid: int, field: str, tenant: TenantFilter | None = None) -> str:
        """The routing domain of VSID ``vsid``; to a ``tenant``, one of another tenant's is none."""
        index = self.kv.get(keys.vsid_index_key(vsid))
        if index is None or (tenant is not None and not tenant.owns(index.value.decode())):
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
        for _ in self._txns.attempts(f"update {what}"):
            found = self.kv.get(key)
            if found is None:
                raise ResourceNotFound(f"{what} does not exist")
            check_expected(found, expected_revision, what)
            updated = merge(resource_from(found, kind))
            value = self._txns.encode(updated)  # type: ignore[arg-type]
            result = self._txns.write([Compare.mod_revision_is(key, found.mod_revision)], [Put(key, value)])
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
        for _ in self._txns.attempts(f"delete {what}"):
            found = self.kv.get(key)
            if found is None:
                raise ResourceNotFound(f"{what} does not exist")
            check_expected(found, expected_revision, what)
            compares, ops = dependents(found, self.kv.current_revision())
            result = self._txns.write(
                [Compare.mod_revision_is(key, found.mod_revision), *compares], [Delete(key), *ops]
            )
            if result.succeeded:
                return result.revision
        raise AssertionError("unreachable")

    def _create(self, key: bytes, resource: Resource, exists: ResourceExists) -> int:
        result = self._txns.write([Compare.absent(key)], [Put(key, self._txns.encode(resource))])
        if not result.succeeded:
            raise exists
        return result.revision


def check_expected(found: KeyValue, expected_revision: int, what: str) -> None:
    if expected_revision and found.mod_revision != expected_revision:
        raise StaleRevision(
            f"{what} is at revision {found.mod_revision}, not the expected {expected_revision}",
            [FieldViolation("expected_revision", f"stale: the resource is at revision {found.mod_revision}")],
        )


def valid_rdid(rdid: str, field: str) -> str:
    violations = validation.Violations()
    checked = validation.check_rdid(rdid, field, violations)
    violations.raise_if_any("routing domain ID")
    return checked


def valid_vsid(vsid: int, field: str) -> None:
    violations = validation.Violations()
    validation.check_vsid(vsid, field, violations)
    violations.raise_if_any("VSID")


def valid_ip(value: str, field: str) -> str:
    violations = validation.Violations()
    checked = validation.check_ipv4(value, field, violations)
    violations.raise_if_any("address")
    return checked
