"""The host registry as the policy service serves it (GetHost, ListHosts).

Each vswitch agent registers its host's name and PA for good under ``registry/hosts/{host}`` (a
``Host``, services/vswitch/agent.py) and keeps its status under ``hosts/{host}`` on a lease
(docs/key-schema.md). A host here is its registration joined with its status at the same revision:
``alive`` while the lease holds. MoveLookupRecords resolves a destination host through the same
registration (record_move.py).
"""

from __future__ import annotations

from overland.v1 import types_pb2
from services.common.errors import FieldViolation
from services.common.kv import Get, KeyValue
from services.common.schema import keys, resource_from
from services.policy import validation
from services.policy.errors import ResourceNotFound
from services.policy.listing import ListPage, TableListing
from services.policy.txns import TableTxns
from services.policy.unreadable import UnreadableEntries


def live_status(kv: KeyValue, table_revision: int) -> types_pb2.HostStatus:
    """An agent's leased status: present means alive; its lag is measured against the newest table
    change (``table_revision``), not the store revision, which status writes move on their own."""
    status = resource_from(kv, types_pb2.HostStatus)
    status.alive = True
    status.lag_revisions = max(table_revision - status.applied_revision, 0)
    return status


def with_status(
    host: types_pb2.Host, status: KeyValue | None, table_revision: int, unreadable: UnreadableEntries
) -> types_pb2.Host:
    """``host`` (a registration) as GetHost answers it: alive, with its agent's status, or not. A
    status written around the service that it cannot read still means alive (its lease holds); it is
    reported and left out, rather than failing the call for every host."""
    host.alive = status is not None
    if status is not None and unreadable.read(status, types_pb2.HostStatus, "host-status") is not None:
        host.status.CopyFrom(live_status(status, table_revision))
    return host


def valid_host_name(host_name: str, field: str = "host_name") -> str:
    violations = validation.Violations()
    name = validation.check_name(host_name, field, violations, required=True)
    violations.raise_if_any("host name")
    return name


class HostRegistry:
    """Reads of the host registry over the store's transactions and listings."""

    def __init__(self, txns: TableTxns, listing: TableListing, unreadable: UnreadableEntries) -> None:
        self._txns = txns
        self._listing = listing
        self._unreadable = unreadable

    def get(self, host_name: str) -> types_pb2.Host:
        name = valid_host_name(host_name)
        (registration, status, marker), _ = self._txns.snapshot(
            [Get(keys.registration_key(name)), Get(keys.host_key(name)), Get(keys.TABLE_REVISION_KEY)]
        )
        if not registration:
            raise ResourceNotFound(
                f"host {name} is not registered (its vswitch agent registers it when it starts)",
                [FieldViolation("host_name", f"no host named {name} has registered")],
            )
        return with_status(
            resource_from(registration[0], types_pb2.Host),
            status[0] if status else None,
            marker[0].mod_revision if marker else 0,
            self._unreadable,
        )

    def table_status(self) -> tuple[int, list[types_pb2.HostStatus]]:
        """The store revision and each live agent's status. Lag is measured against the newest table
        change, not the store revision: agents' own status writes move that without changing the table."""
        (marker, found), revision = self._txns.snapshot(
            [Get(keys.TABLE_REVISION_KEY), Get(keys.HOSTS_PREFIX, prefix=True)]
        )
        table_revision = marker[0].mod_revision if marker else 0
        # The keys live only as long as the agents' leases: present means alive. An unreadable one
        # is skipped (and reported), not the end of the status.
        hosts = [
            live_status(kv, table_revision)
            for kv in found
            if self._unreadable.read(kv, types_pb2.HostStatus, "status") is not None
        ]
        return revision, hosts

    def list(self, page: types_pb2.PageRequest) -> ListPage[types_pb2.Host]:
        """A page of registered hosts, each with its status at the page's revision."""
        found = self._listing.under_prefix(page, keys.REGISTRY_PREFIX, types_pb2.Host)
        if not found.items:
            return found
        first, last = found.items[0].host_name, found.items[-1].host_name
        # Status keys sort as registrations do: the page's statuses lie between its first and last host.
        statuses = {
            kv.key: kv
            for kv in self._listing.between(
                keys.HOSTS_PREFIX, keys.host_key(first), keys.host_key(last), found.revision
            )
        }
        marker = self._listing.between(
            keys.TABLE_REVISION_KEY, keys.TABLE_REVISION_KEY, keys.TABLE_REVISION_KEY, found.revision
        )
        table_revision = marker[0].mod_revision if marker else 0
        for host in found.items:
            with_status(host, statuses.get(keys.host_key(host.host_name)), table_revision, self._unreadable)
        return found
