"""EtcdProcess against the real etcd binary: start, health, restart keeping data and ports, kill. These
are about the process, so its etcd is the plaintext one (read through etcd's HTTP gateway)."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.etcd_process import EtcdProcess, EtcdProcessError
from tests.conftest import start_test_etcd

pytestmark = pytest.mark.etcd


def _put(server: EtcdProcess, key: bytes, value: bytes) -> None:
    body = json.dumps(
        {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
    ).encode()
    request = urllib.request.Request(f"{server.client_url}/v3/kv/put", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _get(server: EtcdProcess, key: bytes) -> bytes | None:
    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    request = urllib.request.Request(f"{server.client_url}/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.loads(response.read()).get("kvs", [])
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def test_start_is_healthy_and_stop_ends_it(plain_etcd_server: EtcdProcess) -> None:
    assert plain_etcd_server.running
    assert plain_etcd_server.healthy()
    assert plain_etcd_server.endpoint == f"127.0.0.1:{plain_etcd_server.client_port}"
    plain_etcd_server.stop()
    assert not plain_etcd_server.running
    assert not plain_etcd_server.healthy(timeout=0.5)


def test_restart_keeps_data_and_ports(plain_etcd_server: EtcdProcess) -> None:
    _put(plain_etcd_server, b"/k", b"v1")
    endpoint, pid = plain_etcd_server.endpoint, plain_etcd_server.pid
    plain_etcd_server.restart()
    assert plain_etcd_server.endpoint == endpoint
    assert plain_etcd_server.pid != pid
    assert _get(plain_etcd_server, b"/k") == b"v1"


def test_kill_then_restart_keeps_data(plain_etcd_server: EtcdProcess) -> None:
    _put(plain_etcd_server, b"/k", b"v2")
    plain_etcd_server.kill()
    assert not plain_etcd_server.running
    plain_etcd_server.restart()
    assert _get(plain_etcd_server, b"/k") == b"v2"


def test_pause_makes_it_unresponsive_until_resumed(plain_etcd_server: EtcdProcess) -> None:
    plain_etcd_server.pause()
    assert not plain_etcd_server.healthy(timeout=0.3)
    plain_etcd_server.resume()
    plain_etcd_server.wait_healthy(timeout=10)
    assert plain_etcd_server.healthy()


def test_options_reach_the_command_line(tmp_path: Path) -> None:
    server = EtcdProcess(
        tmp_path / "etcd",
        max_txn_ops=7,
        auto_compaction_mode="revision",
        auto_compaction_retention="100",
        quota_backend_bytes=64 * 1024 * 1024,
        watch_progress_notify_interval=0.25,
    )
    with server:
        command = server.command()
        assert command[command.index("--max-txn-ops") + 1] == "7"
        assert command[command.index("--auto-compaction-mode") + 1] == "revision"
        assert command[command.index("--quota-backend-bytes") + 1] == str(64 * 1024 * 1024)
        assert command[command.index("--experimental-watch-progress-notify-interval") + 1] == "250ms"
        assert server.healthy()
    assert not server.running


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        EtcdProcess(tmp_path, max_txn_ops=0)
    with pytest.raises(InvalidArgument):
        EtcdProcess(tmp_path, auto_compaction_mode="revision")


def test_a_bad_flag_fails_start_with_the_log(tmp_path: Path) -> None:
    with pytest.raises(EtcdProcessError, match="exited"):
        start_test_etcd(tmp_path / "etcd", plain=True, extra_args=["--no-such-flag"])


def test_endpoint_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EtcdProcessError):
        _ = EtcdProcess(tmp_path).endpoint


def test_a_new_process_on_an_old_data_dir_keeps_the_data(tmp_path: Path) -> None:
    # What `make run` does when run again: same data dir, fresh ports.
    with start_test_etcd(tmp_path / "etcd", plain=True) as first:
        _put(first, b"/k", b"kept")
    with start_test_etcd(tmp_path / "etcd", plain=True) as second:
        assert _get(second, b"/k") == b"kept"
