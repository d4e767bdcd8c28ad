"""WatchTable: the table's changes as a stream of TableEvents, read from an etcd watch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from overland.v1 import policy_pb2, types_pb2
from services.common.errors import FieldViolation
from services.common.kv import KV, EventType, KVCompactedError, WatchEvent
from services.common.schema import decode_entry, keys
from services.policy import validation
from services.policy.errors import PolicyConflict


def watch_table(
    kv: KV, start_revision: int, rdids: Sequence[str], on_open: Callable[[Callable[[], None]], None]
) -> Iterator[policy_pb2.WatchTableResponse]:
    """Table changes after ``start_revision`` (0: from now), filtered to ``rdids`` (provider
    addresses always pass). ``on_open`` receives the function that cancels the watch."""
    violations = validation.Violations()
    if start_revision < 0:
        violations.add("start_revision", "must not be negative")
    domains = {validation.check_rdid(r, f"rdids[{i}]", violations) for i, r in enumerate(rdids)}
    violations.raise_if_any("watch request")
    first = (start_revision or kv.current_revision()) + 1
    prefixes = tuple(keys.domain_prefix(r) for r in domains) if domains else (keys.TABLE_PREFIX,)
    stream = kv.watch(keys.ROOT, first, prev_kv=True)
    on_open(stream.cancel)
    try:
        for batch in stream:
            events = [
                table_event(event)
                for event in batch.events
                if event.kv.key.startswith(keys.PA_PREFIX) or event.kv.key.startswith(prefixes)
            ]
            if events or batch.progress:
                yield policy_pb2.WatchTableResponse(events=events, revision=batch.revision)
    except KVCompactedError as error:
        raise PolicyConflict(
            f"start_revision {start_revision} is compacted (compacted up to {error.compact_revision}); "
            f"read the table again and watch from its revision",
            [FieldViolation("start_revision", f"older than the compact revision {error.compact_revision}")],
        ) from error
    finally:
        stream.cancel()


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
