"""Stored values the service cannot read, written around it: found, reported, skipped, quarantined.

A value written by hand into etcd (or by a writer of another schema) must not break the listing of
the rest of its VSID. ``UnreadableEntries`` is where the store sends each such value it meets: it
logs it, counts it (``overland.policy.unreadable_entries``) and makes the ``UnreadableEntry`` that a
list response names it with. ``problem`` is the one decision of what is unreadable, for listings and
``CheckTable`` alike; ``quarantine_key`` is where ``overland policy check --quarantine`` moves such a
value, outside ``/overland/v1/``, where no agent and no listing looks.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message
from opentelemetry.metrics import Meter, NoOpMeter

from overland.v1 import types_pb2
from services.common.errors import excerpt
from services.common.kv import Compare, Delete, KeyValue, Put
from services.common.schema import FIELD_OF_KIND, CorruptEntry, decode_entry, key_of, keys, resource_from
from services.policy.txns import TableTxns

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)

UNREADABLE_ENTRIES = "overland.policy.unreadable_entries"
QUARANTINE_PREFIX = keys.QUARANTINE_PREFIX
_ROOT_PARENT = b"/overland/"


def quarantine_key(key: bytes) -> bytes:
    """``/overland/v1/table/...`` -> ``/overland/quarantine/v1/table/...``."""
    return QUARANTINE_PREFIX + key.removeprefix(_ROOT_PARENT)


def _index_problem(parsed: keys.TableKey, value: bytes) -> str:
    try:
        text = value.decode()
        if parsed.kind == keys.KIND_VSID_INDEX:
            uuid.UUID(text)
        else:
            ipaddress.IPv4Address(text)
    except ValueError:
        what = "a routing domain ID" if parsed.kind == keys.KIND_VSID_INDEX else "a CA"
        return f"the index value {excerpt(value)} is not {what}"
    return ""


def problem(kv: KeyValue) -> str:
    """Why the service cannot read ``kv`` ("" when it can): a resource key whose value is not a
    StoreEntry holding that resource under that key, or an index key whose value is not what the
    index holds. Keys outside the schema are not the service's, and are left alone."""
    parsed = keys.parse_key(kv.key)
    if parsed is None:
        return ""
    if parsed.kind in (keys.KIND_VSID_INDEX, keys.KIND_MAC_INDEX):
        return _index_problem(parsed, kv.value)
    expected = FIELD_OF_KIND.get(parsed.kind)
    if expected is None:
        return ""
    try:
        entry = decode_entry(kv.value, kv.key)
        held = entry.WhichOneof("resource")
        if held != expected:
            return f"holds {held or 'nothing'}, expected {expected}"
        if key_of(entry) != kv.key:
            return f"holds a {expected} whose own key is {excerpt(key_of(entry))}"
    except (CorruptEntry, ValueError) as error:
        return excerpt(str(error), 200)
    return ""


class UnreadableEntries:
    """Reports unreadable values: a warning in the log, a counter, and an ``UnreadableEntry``."""

    def __init__(self, meter: Meter | None = None) -> None:
        self._counter = (meter or NoOpMeter("overland")).create_counter(
            UNREADABLE_ENTRIES,
            unit="{entry}",
            description="stored values the policy service skipped because it cannot read them",
        )
        self._lock = threading.Lock()
        self.reported = 0

    def report(self, kv: KeyValue, reason: str, where: str) -> types_pb2.UnreadableEntry:
        key = kv.key.decode(errors="replace")
        log.warning(
            "unreadable stored value skipped; 'overland policy check' lists and quarantines them",
            extra={"key": key, "reason": reason, "mod_revision": kv.mod_revision, "where": where},
        )
        self._counter.add(1, {"where": where})
        with self._lock:
            self.reported += 1
        return types_pb2.UnreadableEntry(key=key, reason=reason, mod_revision=kv.mod_revision)

    def read(
        self, kv: KeyValue, kind: type[R], where: str, found: list[types_pb2.UnreadableEntry] | None = None
    ) -> R | None:
        """The resource in ``kv``, or None when it is unreadable (reported, and added to ``found``)."""
        try:
            return resource_from(kv, kind)
        except CorruptEntry as error:
            entry = self.report(kv, excerpt(error.message, 200), where)
            if found is not None:
                found.append(entry)
            return None


@dataclass
class CheckResult:
    """What ``check_table`` found: the first ``MAX_LISTED`` unreadable values, how many in all,
    how many it quarantined, how many keys it read and at which revision."""

    unreadable: list[types_pb2.UnreadableEntry] = field(default_factory=list)
    found: int = 0
    quarantined: int = 0
    checked: int = 0
    revision: int = 0


MAX_LISTED = 1000
_SCAN_CHUNK = 1000


def check_table(txns: TableTxns, *, quarantine: bool) -> CheckResult:
    """Read every key of the schema at one revision and name each unreadable value (``problem``);
    with ``quarantine``, move each under ``QUARANTINE_PREFIX`` in its own transaction, which compares
    the mod revision it was read at (a key written since is left for the next check)."""
    kv = txns.kv
    result = CheckResult()
    start: bytes | None = None
    while True:
        chunk = kv.range(keys.ROOT, start=start, limit=_SCAN_CHUNK, revision=result.revision)
        result.revision = result.revision or chunk.revision
        for stored in chunk.kvs:
            result.checked += 1
            reason = problem(stored)
            if not reason:
                continue
            result.found += 1
            if len(result.unreadable) < MAX_LISTED:
                key = stored.key.decode(errors="replace")
                result.unreadable.append(
                    types_pb2.UnreadableEntry(key=key, reason=reason, mod_revision=stored.mod_revision)
                )
            if quarantine:
                moved = txns.write(
                    [Compare.mod_revision_is(stored.key, stored.mod_revision)],
                    [Put(quarantine_key(stored.key), stored.value), Delete(stored.key)],
                )
                result.quarantined += moved.succeeded
                log.warning(
                    "unreadable stored value quarantined" if moved.succeeded else "changed since read: left",
                    extra={"key": stored.key.decode(errors="replace"), "reason": reason},
                )
        if not chunk.more or not chunk.kvs:
            return result
        start = chunk.kvs[-1].key + b"\0"
