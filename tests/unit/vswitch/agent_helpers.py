"""Helpers for the agent and watcher tests: store writes, polling, a KV that can refuse watches, and a
recording datapath."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from overland.v1 import vswitch_pb2
from services.common.kv import Delete, KVUnavailableError, Put
from services.common.memory_kv import MemoryKV, MemoryWatch
from services.common.schema import StoreEntry, key_of
from services.common.table import RoutingTable, TableDelta
from services.vswitch.agent import Agent
from services.vswitch.config import BackoffPolicy
from tests.unit.vswitch.table_factory import domain, provider, subnet

# Reconnects in milliseconds, so outage tests do not wait for production backoff.
FAST_BACKOFF = BackoffPolicy(initial_seconds=0.01, cap_seconds=0.05)


def put(kv: Any, *entries: StoreEntry) -> int:
    """Write entries in one transaction; returns its revision."""
    return int(kv.txn([], [Put(key_of(e), e.SerializeToString()) for e in entries]).revision)


def delete(kv: Any, *entries: StoreEntry) -> int:
    return int(kv.txn([], [Delete(key_of(e)) for e in entries]).revision)


def seed(kv: Any, *entries: StoreEntry) -> None:
    """Two PAs, the blue routing domain and its subnet 4096 on 192.0.2.0/24, then ``entries``."""
    put(kv, provider("198.18.0.1"), provider("198.18.0.2"), domain("rd-blue"))
    put(kv, subnet(4096, "rd-blue", "192.0.2.0/24"), *entries)


@contextmanager
def started_agent(agent: Agent) -> Iterator[Agent]:
    """The agent started, and stopped afterwards whatever happens."""
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; a generous bound, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class GatedKV(MemoryKV):
    """A MemoryKV whose watches can be refused, as if the agent could not reach etcd for watching."""

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.watch_refused = threading.Event()
        self.watch_calls = 0
        self.range_calls: list[int] = []

    def watch(self, prefix: bytes, start_revision: int, **options: Any) -> MemoryWatch:
        self.watch_calls += 1
        if self.watch_refused.is_set():
            raise KVUnavailableError("watch refused by the test")
        return super().watch(prefix, start_revision, **options)

    def range(self, prefix: bytes, **options: Any) -> Any:
        self.range_calls.append(options.get("revision", 0))
        return super().range(prefix, **options)


class RecordingDatapath:
    """A datapath that records what the agent gives it, and can fail on purpose."""

    def __init__(self) -> None:
        self.table_lock = threading.RLock()
        self.deltas: list[TableDelta] = []
        self.started = False
        self.stopped = False
        self.fail_with: BaseException | None = None
        self.attached: list[vswitch_pb2.Port] = []

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def apply(self, table: RoutingTable, delta: TableDelta) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.deltas.append(delta)

    def attach_port(self, port: vswitch_pb2.Port) -> vswitch_pb2.Port:
        self.attached.append(port)
        attached = vswitch_pb2.Port()
        attached.CopyFrom(port)
        attached.ca = "192.0.2.1"
        return attached

    def detach_port(self, name: str) -> None:
        self.attached = [p for p in self.attached if p.name != name]

    def ports(self) -> Sequence[vswitch_pb2.Port]:
        return list(self.attached)

    def counters(self) -> vswitch_pb2.Counters:
        return vswitch_pb2.Counters(rx_packets=7, drops={"truncated": 2})

    def extensions(self) -> Sequence[vswitch_pb2.Extension]:
        return [vswitch_pb2.Extension(name="capture", kind=vswitch_pb2.Extension.KIND_CAPTURE)]

    def configure_extension(self, extension: vswitch_pb2.Extension) -> vswitch_pb2.Extension:
        return extension

    def removed_keys(self) -> set[bytes]:
        return {c.key for d in self.deltas for c in d.removed()}
