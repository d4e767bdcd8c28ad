"""EtcdKV against a real etcd that fails: killed, hung (SIGSTOP), restarted; several endpoints; TLS.
The etcd has users (tests/conftest.py): these clients are root, and a restart makes etcd forget their
token, which they must notice and replace."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from overland.config import TlsFiles
from services.common.errors import InvalidArgument
from services.common.etcd_auth import ROOT_USER
from services.common.etcd_kv import EtcdKV
from services.common.etcd_messages import KVSpaceExceededError
from services.common.etcd_process import EtcdProcess, free_ports
from services.common.kv import KVUnavailableError, Put, WatchEvent
from tests.conftest import start_test_etcd
from tests.unit.sdk.certs import make_pki

pytestmark = pytest.mark.etcd

# Short deadlines keep the "etcd is gone" cases quick; what is asserted is the error, not the time.
SHORT_DEADLINE = 0.5


def root_kv(server: EtcdProcess, **fields: Any) -> EtcdKV:
    return EtcdKV.from_config(server.etcd_config(ROOT_USER, **fields))


@pytest.fixture
def short_kv(etcd_server: EtcdProcess) -> Iterator[EtcdKV]:
    kv = root_kv(etcd_server, timeout=SHORT_DEADLINE)
    yield kv
    kv.close()


def every_call(kv: EtcdKV) -> list[Callable[[], Any]]:
    return [
        lambda: kv.get(b"/k"),
        lambda: kv.range(b"/"),
        kv.current_revision,
        lambda: kv.txn([], [Put(b"/k", b"v")]),
        lambda: kv.grant_lease(10),
        lambda: kv.refresh_lease(1),
        lambda: kv.revoke_lease(1),
        lambda: kv.compact(1),
        lambda: kv.watch(b"/", 0),
    ]


def test_every_call_raises_unavailable_when_etcd_is_killed(
    etcd_server: EtcdProcess, short_kv: EtcdKV
) -> None:
    short_kv.txn([], [Put(b"/k", b"v")])
    etcd_server.kill()
    for call in every_call(short_kv):
        with pytest.raises(KVUnavailableError) as failed:
            call()
        assert failed.value.message.startswith(f"etcd {etcd_server.endpoint} "), failed.value.message


def test_every_call_raises_unavailable_when_etcd_hangs(etcd_server: EtcdProcess, short_kv: EtcdKV) -> None:
    short_kv.txn([], [Put(b"/k", b"v")])
    etcd_server.pause()
    try:
        for call in every_call(short_kv):
            with pytest.raises(KVUnavailableError) as failed:
                call()
            assert failed.value.message.startswith(f"etcd {etcd_server.endpoint} "), failed.value.message
    finally:
        etcd_server.resume()


def test_calls_work_again_after_a_restart(etcd_server: EtcdProcess, etcd_kv: EtcdKV) -> None:
    etcd_kv.txn([], [Put(b"/k", b"before")])
    etcd_server.restart(graceful=False)
    # The client reconnects to the same endpoint on its own; one call's deadline covers it.
    assert etcd_kv.get(b"/k").value == b"before"  # type: ignore[union-attr]


def test_an_open_watch_raises_when_etcd_dies(etcd_server: EtcdProcess, etcd_kv: EtcdKV) -> None:
    stream = etcd_kv.watch(b"/w/", 0)
    etcd_kv.txn([], [Put(b"/w/a", b"1")])
    assert next(b for b in stream if b.events).events[0].kv.key == b"/w/a"
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in stream:
                pass
        except KVUnavailableError as error:
            errors.append(error)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    etcd_server.kill()
    thread.join(30)
    assert not thread.is_alive(), "the watch hung after etcd died"
    assert len(errors) == 1


def test_a_hung_etcd_trips_the_watch_idle_timeout(etcd_server: EtcdProcess) -> None:
    kv = root_kv(etcd_server, timeout=2.0, watch_idle_timeout=3.0)
    try:
        stream = kv.watch(b"/idle/", 0)
        # Progress notifications (every 0.2 s in tests) keep an idle but healthy watch alive.
        assert next(iter(stream)).progress
        etcd_server.pause()
        with pytest.raises(KVUnavailableError):
            for _ in stream:
                pass
    finally:
        etcd_server.resume()
        kv.close()


def test_a_new_watch_after_restart_gets_exactly_the_missed_events(
    etcd_server: EtcdProcess, etcd_kv: EtcdKV
) -> None:
    stream = etcd_kv.watch(b"/r/", 0)
    etcd_kv.txn([], [Put(b"/r/a", b"1")])
    seen = next(b for b in stream if b.events)
    last_seen = seen.revision
    etcd_server.stop()
    with pytest.raises(KVUnavailableError):
        for _ in stream:
            pass
    etcd_server.start()
    etcd_kv.txn([], [Put(b"/r/b", b"2")])
    etcd_kv.txn([], [Put(b"/unwatched", b"x")])
    etcd_kv.txn([], [Put(b"/r/a", b"3"), Put(b"/r/c", b"4")])
    resumed = etcd_kv.watch(b"/r/", last_seen + 1)
    events: list[WatchEvent] = []
    for batch in resumed:
        events += batch.events
        if len(events) >= 3:
            break
    resumed.request_progress()
    extra = next(b for b in resumed if b.progress or b.events)
    resumed.cancel()
    assert [(e.kv.key, e.kv.value) for e in events] == [(b"/r/b", b"2"), (b"/r/a", b"3"), (b"/r/c", b"4")]
    assert extra.events == ()


def test_fails_over_to_the_next_endpoint(etcd_server: EtcdProcess) -> None:
    (nothing_listens,) = free_ports(1)
    config = etcd_server.etcd_config(ROOT_USER, timeout=2.0)
    kv = EtcdKV.from_config(replace(config, endpoints=(f"127.0.0.1:{nothing_listens}", etcd_server.endpoint)))
    try:
        kv.txn([], [Put(b"/f", b"1")])
        assert kv.get(b"/f").value == b"1"  # type: ignore[union-attr]
        assert kv.endpoint == etcd_server.endpoint
        stream = kv.watch(b"/f", 0)
        stream.cancel()
    finally:
        kv.close()


def test_bad_endpoints_are_rejected() -> None:
    for endpoints in ([], ["no-port"], ["127.0.0.1:99999"]):
        with pytest.raises(InvalidArgument):
            EtcdKV(endpoints)


def test_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = start_test_etcd(
        tmp_path / "etcd", plain=True, tls=TlsFiles(cert=pki.server_cert, key=pki.server_key, ca=pki.ca)
    )
    try:
        tls = TlsFiles(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
        kv = EtcdKV(f"https://{server.endpoint}", timeout=2.0, tls=tls)
        kv.txn([], [Put(b"/tls", b"yes")])
        assert kv.get(b"/tls").value == b"yes"  # type: ignore[union-attr]
        kv.close()
        # Without a client certificate the server refuses the connection.
        anonymous = EtcdKV(server.endpoint, timeout=SHORT_DEADLINE, tls=TlsFiles(ca=pki.ca))
        with pytest.raises(KVUnavailableError):
            anonymous.get(b"/tls")
        anonymous.close()
    finally:
        server.close()


def test_a_full_backend_refuses_writes(tmp_path: Path) -> None:
    server = start_test_etcd(tmp_path / "etcd", quota_backend_bytes=256 * 1024)
    kv = root_kv(server, timeout=5.0)
    value = b"x" * 64 * 1024

    def fill() -> None:
        for i in range(200):
            kv.txn([], [Put(f"/big/{i}".encode(), value)])

    try:
        with pytest.raises(KVSpaceExceededError):
            fill()
    finally:
        kv.close()
        server.close()
