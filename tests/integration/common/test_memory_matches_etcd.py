"""Differential test: random transaction histories applied to MemoryKV and to a real etcd give the
same results, revision for revision, so unit tests on MemoryKV predict etcd."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import ServiceError
from services.common.etcd_kv import EtcdKV
from services.common.kv import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    Get,
    KeyValue,
    Op,
    Put,
)
from services.common.memory_kv import MemoryKV

pytestmark = pytest.mark.etcd

NAMES = [b"a", b"a/x", b"a/y", b"b"]

puts = st.builds(lambda k, v: ("put", k, v), st.sampled_from(NAMES), st.binary(max_size=2))
ops = st.one_of(
    puts,
    puts,
    st.builds(lambda k, p: ("delete", k, p), st.sampled_from([*NAMES, b"a/", b""]), st.booleans()),
    st.builds(lambda k, p: ("get", k, p), st.sampled_from([*NAMES, b"a/", b""]), st.booleans()),
)
compares = st.builds(
    lambda k, target, op, n, v: (k, target, op, n, v),
    st.sampled_from(NAMES),
    st.sampled_from(list(CompareTarget)),
    st.sampled_from(list(CompareOp)),
    st.integers(min_value=0, max_value=4),
    st.binary(max_size=2),
)
histories = st.lists(
    st.tuples(st.lists(compares, max_size=2), st.lists(ops, max_size=4), st.lists(ops, max_size=2)),
    min_size=3,
    max_size=15,
)

_examples = itertools.count()


class Side:
    """One store seen through a key prefix, with revisions counted from where the example started."""

    def __init__(self, kv: Any, prefix: bytes):
        self.kv, self.prefix, self.base = kv, prefix, kv.current_revision()

    def key(self, name: bytes) -> bytes:
        return self.prefix + name

    def op(self, spec: tuple[Any, ...]) -> Op:
        kind, name, extra = spec
        if kind == "put":
            return Put(self.key(name), extra)
        if kind == "delete":
            return Delete(self.key(name), prefix=extra)
        return Get(self.key(name), prefix=extra)

    def compare(self, spec: tuple[Any, ...]) -> Compare:
        name, target, op, number, value = spec
        operand = value if target is CompareTarget.VALUE else (self.base + number if number else 0)
        if target is CompareTarget.VERSION:
            operand = number
        return Compare(self.key(name), target, op, operand)

    def seen(self, kv: KeyValue) -> tuple[Any, ...]:
        """A key-value with its key and revisions made relative to this side."""

        def rel(revision: int) -> int:
            return revision - self.base if revision else 0

        return (
            kv.key[len(self.prefix) :],
            kv.value,
            rel(kv.create_revision),
            rel(kv.mod_revision),
            kv.version,
        )

    def outcome(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ServiceError as error:
            return type(error).__name__


def run_txn(side: Side, compare_specs: list[Any], success: list[Any], failure: list[Any]) -> Any:
    def call() -> Any:
        result = side.kv.txn(
            [side.compare(c) for c in compare_specs],
            [side.op(o) for o in success],
            [side.op(o) for o in failure],
        )
        return (
            result.succeeded,
            result.revision - side.base,
            [[side.seen(kv) for kv in response] for response in result.responses],
        )

    return side.outcome(call)


def events_from(side: Side, start: int, latest: int) -> list[Any]:
    """Every event a watch from relative revision ``start`` delivers up to ``latest``."""
    stream = side.kv.watch(side.prefix, side.base + start, prev_kv=True)
    seen: list[Any] = []
    try:
        stream.request_progress()
        for batch in stream:
            seen += [
                (e.type, side.seen(e.kv), side.seen(e.prev_kv) if e.prev_kv else None) for e in batch.events
            ]
            if batch.revision >= side.base + latest:
                break
    finally:
        stream.cancel()
    return seen


def snapshot(side: Side, revision: int) -> Any:
    return side.outcome(
        lambda: [side.seen(kv) for kv in side.kv.range(side.prefix, revision=side.base + revision).kvs]
    )


@given(histories)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_memory_kv_behaves_like_etcd(etcd_kv: EtcdKV, history: list[Any]) -> None:
    # One etcd serves every example (hence the health check): each example keeps to its own prefix.
    prefix = f"/differential/{next(_examples)}/".encode()
    memory = Side(MemoryKV(progress_interval=0.2), prefix)
    etcd = Side(etcd_kv, prefix)
    for compare_specs, success, failure in history:
        expected = run_txn(etcd, compare_specs, success, failure)
        assert run_txn(memory, compare_specs, success, failure) == expected
    latest = etcd.kv.current_revision() - etcd.base
    assert memory.kv.current_revision() - memory.base == latest
    for revision in range(latest + 1):
        assert snapshot(memory, revision) == snapshot(etcd, revision)
    for start in sorted({1, latest // 2 + 1}):
        assert events_from(memory, start, latest) == events_from(etcd, start, latest)
