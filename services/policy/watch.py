"""WatchTable: the table's changes as a stream of TableEvents, read from an etcd watch that holds at
most a bounded backlog for a client that does not keep up (docs/servers.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

from overland.v1 import policy_pb2, types_pb2
from services.common.errors import FieldViolation
from services.common.kv import (
    KV,
    EventType,
    KeyValue,
    KVCompactedError,
    KVWatchOverflowError,
    WatchBacklog,
    WatchEvent,
)
from services.common.schema import decode_entry, keys
from services.policy import validation
from services.policy.errors import PolicyConflict, WatchBacklogExceeded
from services.policy.tenancy import TenantFilter
from services.policy.unreadable import UnreadableEntries, problem

log = logging.getLogger(__name__)


def watch_table(
    kv: KV,
    start_revision: int,
    rdids: Sequence[str],
    on_open: Callable[[Callable[[], None]], None],
    backlog: WatchBacklog | None = None,
    *,
    tenant: TenantFilter | None = None,
    unreadable: UnreadableEntries | None = None,
) -> Iterator[policy_pb2.WatchTableResponse]:
    """Table changes after ``start_revision`` (0: from now), filtered to ``rdids`` (provider
    addresses always pass) and, for a ``tenant``, to its own domains (``TenantFilter.sees_event``).
    ``on_open`` receives the function that cancels the watch.

    With a ``backlog``, a client that reads nothing while it is full ends with
    ``WatchBacklogExceeded`` naming the revision it has every change up to. gRPC asks this generator
    for the next response only once the last one is handed to the transport (whose flow control
    bounds what it holds), so the revision of the last batch taken from the watch is exactly where
    the client resumes: it receives every response before the status."""
    unreadable = unreadable or UnreadableEntries()
    violations = validation.Violations()
    if start_revision < 0:
        violations.add("start_revision", "must not be negative")
    domains = {validation.check_rdid(r, f"rdids[{i}]", violations) for i, r in enumerate(rdids)}
    violations.raise_if_any("watch request")
    first = (start_revision or kv.current_revision()) + 1
    prefixes = tuple(keys.domain_prefix(r) for r in domains) if domains else (keys.TABLE_PREFIX,)
    stream = kv.watch(keys.ROOT, first, prev_kv=True, backlog=backlog)
    on_open(stream.cancel)
    try:
        for batch in stream:
            response = policy_pb2.WatchTableResponse(revision=batch.revision)
            for event in batch.events:
                if event.kv.key.startswith(keys.PA_PREFIX) or (
                    event.kv.key.startswith(prefixes)
                    and (tenant is None or tenant.sees_event(event.kv.key, _written(event)))
                ):
                    _add_event(response, event, unreadable)
            if response.events or response.unreadable or batch.progress:
                yield response
    except KVWatchOverflowError as error:
        log.info(
            "a watcher stopped reading; its stream ends with the revision to resume from",
            extra={"revision": error.revision},
        )
        raise WatchBacklogExceeded(error.revision, backlog or WatchBacklog(0, 0)) from error
    except KVCompactedError as error:
        raise PolicyConflict(
            f"start_revision {start_revision} is compacted (compacted up to {error.compact_revision}); "
            f"read the table again and watch from its revision",
            [FieldViolation("start_revision", f"older than the compact revision {error.compact_revision}")],
        ) from error
    finally:
        stream.cancel()


def _written(event: WatchEvent) -> KeyValue | None:
    return event.kv if event.type is EventType.PUT else None


def _add_event(
    response: policy_pb2.WatchTableResponse, event: WatchEvent, unreadable: UnreadableEntries
) -> None:
    """``event`` into ``response``. A value the service cannot read (``problem``, the listings' rule)
    goes to ``response.unreadable``, reported, instead of ending every watcher's stream; a delete
    whose last value is unreadable is a delete without it."""
    if event.type is EventType.PUT:
        reason = problem(event.kv)
        if reason:
            response.unreadable.append(unreadable.report(event.kv, reason, "watch"))
            return
    elif event.prev_kv is not None and event.prev_kv.value and problem(event.prev_kv):
        response.events.append(
            types_pb2.TableEvent(
                type=types_pb2.TableEvent.TYPE_DELETE,
                key=event.kv.key.decode(),
                revision=event.kv.mod_revision,
            )
        )
        return
    response.events.append(table_event(event))


def table_event(event: WatchEvent) -> types_pb2.TableEvent:
    """A watch event as the TableEvent of the API (a delete carries the last value when known)."""
    if event.type is EventType.PUT:
        return types_pb2.TableEvent(
            type=types_pb2.TableEvent.TYPE_PUT,
            key=event.kv.key.decode(),
            entry=decode_entry(event.kv.value, event.kv.key),
            revision=event.kv.mod_revision,
        )
    deleted = types_pb2.TableEvent(
        type=types_pb2.TableEvent.TYPE_DELETE, key=event.kv.key.decode(), revision=event.kv.mod_revision
    )
    if event.prev_kv is not None and event.prev_kv.value:
        deleted.entry.CopyFrom(decode_entry(event.prev_kv.value, event.prev_kv.key))
    return deleted
