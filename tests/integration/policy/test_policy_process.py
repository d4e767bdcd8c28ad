"""``python -m services.policy`` as a process: it serves health and the API on a real etcd, and
SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc
from services.common.etcd_process import EtcdProcess, free_ports
from tests.integration.policy.processes import start_policy, wait_logged, wait_serving

pytestmark = pytest.mark.etcd


def test_policy_process_serves_and_stops_on_sigterm(etcd_server: EtcdProcess, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    log_path = tmp_path / "policy.log"
    process = start_policy(etcd_server, port, log_path)
    try:
        wait_serving(f"127.0.0.1:{port}", log_path)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = policy_pb2_grpc.PolicyServiceStub(channel).GetTableStatus(
                policy_pb2.GetTableStatusRequest(), timeout=10
            )
            assert answer.revision >= 1
        wait_logged(log_path, "policy service listening")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
        log = log_path.read_text()
        assert "policy service listening" in log
        assert "policy service stopping" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def listeners(port: int) -> set[int]:
    """The pids with a listening TCP socket on ``port``."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


@dataclass
class Workers:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    pids: set[int]


@pytest.fixture
def two_workers(etcd_server: EtcdProcess, tmp_path: Path) -> Iterator[Workers]:
    """``python -m services.policy --workers 2``, serving, with both workers listening."""
    (port,) = free_ports(1)
    log_path = tmp_path / "policy.log"
    process = start_policy(etcd_server, port, log_path, "--workers", "2")
    try:
        wait_serving(f"127.0.0.1:{port}", log_path)
        wait_logged(log_path, "policy service listening", times=2)
        pids = listeners(port)
        assert len(pids) == 2, pids
        assert process.pid not in pids
        yield Workers(process, port, log_path, pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_workers_share_the_port_and_stop_together(two_workers: Workers) -> None:
    process, port, log_path = two_workers.process, two_workers.port, two_workers.log_path
    # Separate connections (no shared subchannel), spread by the kernel: every one is served.
    for n in range(12):
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            assert stub.GetTableStatus(policy_pb2.GetTableStatusRequest(), timeout=10).revision >= 1, n
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log_path.read_text()
    assert log_path.read_text().count("policy service stopping") == 2
    assert listeners(port) == set()


def test_a_dead_worker_stops_the_service_with_an_error(two_workers: Workers) -> None:
    first, second = sorted(two_workers.pids)
    os.kill(first, signal.SIGKILL)
    assert two_workers.process.wait(60) != 0
    assert "exited with -9" in two_workers.log_path.read_text()
    assert listeners(two_workers.port) == set()
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


def test_bad_configuration_exits_before_serving() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.policy", "--etcd-timeout", "-1"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert b"invalid policy service configuration" in result.stderr
    assert b"Traceback" not in result.stderr
