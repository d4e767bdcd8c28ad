"""The agent's local copy of its last applied table, so that a restarted agent forwards at once.

A restarted agent loads this file, hands the table to the datapath and only then connects to etcd: the
cold sync that follows is a ``reset`` against what was loaded, so the datapath gets only the
difference (the agent never flushes). Without the file the datapath would wait for Python to import
the etcd and gRPC stacks and for the sync, which is most of a restart's outage.

The format is ours and versioned: a magic, the table's revision, then each entry as a key and its
``StoreEntry`` bytes, length-prefixed. ``encode_table`` and ``decode_table`` are pure (property
tested); ``TableSnapshots`` is the file shell, which re-encodes only entries that changed since the
last save (entries are replaced, never mutated, by the table, so identity says "unchanged").
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping
from pathlib import Path

from google.protobuf.message import DecodeError

from services.common.errors import DataLoss
from services.common.schema import StoreEntry
from services.common.table import RoutingTable
from services.vswitch.datapath_interface import Datapath

log = logging.getLogger(__name__)

MAGIC = b"OVTABLE1"
_HEADER = struct.Struct(">8sQI")
_LENGTHS = struct.Struct(">II")


class SnapshotError(DataLoss):
    """A table snapshot file is truncated or corrupt; the agent starts without it."""


def encode_table(revision: int, encoded: Mapping[bytes, bytes]) -> bytes:
    """The file content for a table at ``revision`` whose entries are already serialized."""
    parts = [_HEADER.pack(MAGIC, revision, len(encoded))]
    for key, value in encoded.items():
        parts.append(_LENGTHS.pack(len(key), len(value)))
        parts.append(key)
        parts.append(value)
    return b"".join(parts)


def decode_table(data: bytes) -> tuple[int, dict[bytes, StoreEntry]]:
    """The revision and entries of a snapshot; ``SnapshotError`` for anything that is not one whole."""
    if len(data) < _HEADER.size:
        raise SnapshotError("table snapshot: truncated header")
    magic, revision, count = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise SnapshotError("table snapshot: not a table snapshot (bad magic)")
    offset = _HEADER.size
    entries: dict[bytes, StoreEntry] = {}
    for _ in range(count):
        if offset + _LENGTHS.size > len(data):
            raise SnapshotError("table snapshot: truncated entry header")
        key_length, value_length = _LENGTHS.unpack_from(data, offset)
        offset += _LENGTHS.size
        end = offset + key_length + value_length
        if end > len(data):
            raise SnapshotError("table snapshot: truncated entry")
        key = data[offset : offset + key_length]
        entry = StoreEntry()
        try:
            entry.ParseFromString(data[offset + key_length : end])
        except DecodeError as error:
            raise SnapshotError(f"table snapshot: undecodable entry under {key!r}") from error
        entries[key] = entry
        offset = end
    if offset != len(data):
        raise SnapshotError("table snapshot: trailing bytes")
    return revision, entries


class TableSnapshots:
    """Saves and loads one agent's table snapshot file (written atomically: temporary file, rename)."""

    def __init__(self, path: Path):
        self.path = path
        # key -> (the entry object last saved, its bytes): unchanged entries are not serialized again.
        self._encoded: dict[bytes, tuple[StoreEntry, bytes]] = {}
        self.saved_revision = -1

    def save(self, revision: int, entries: Mapping[bytes, StoreEntry]) -> None:
        """Write the table (a copy the caller no longer mutates); ``OSError`` if the file cannot be."""
        previous = self._encoded
        current: dict[bytes, tuple[StoreEntry, bytes]] = {}
        for key, entry in entries.items():
            known = previous.get(key)
            current[key] = (
                known if known is not None and known[0] is entry else (entry, entry.SerializeToString())
            )
        data = encode_table(revision, {key: encoded for key, (_, encoded) in current.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.path)
        self._encoded = current
        self.saved_revision = revision

    def load(self) -> tuple[int, dict[bytes, StoreEntry]] | None:
        """The saved table, or None when there is none or it is unreadable (logged: the agent then
        starts as if new and syncs from etcd)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("table snapshot unreadable, starting without it", extra={"error": str(error)})
            return None
        try:
            return decode_table(data)
        except SnapshotError as error:
            log.warning("table snapshot corrupt, starting without it", extra={"error": error.message})
            return None


def resume_forwarding(datapath: Datapath, table: RoutingTable, snapshots: TableSnapshots | None) -> bool:
    """Start ``datapath`` and, when a saved table exists, load it into ``table`` (empty) and apply it:
    forwarding resumes before etcd is reached. Whether a saved table was loaded."""
    loaded = snapshots.load() if snapshots is not None else None
    datapath.start()
    if loaded is None:
        return False
    revision, entries = loaded
    with datapath.table_lock:
        datapath.apply(table, table.reset(entries, revision))
    log.info(
        "forwarding on the saved table until etcd is synced",
        extra={"revision": revision, "keys": len(entries)},
    )
    return True
