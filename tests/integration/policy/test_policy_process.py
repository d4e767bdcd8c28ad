"""``python -m services.policy`` as a process: it serves health and the API on a real etcd, and
SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from overland.v1 import policy_pb2, policy_pb2_grpc
from services.common.etcd_process import EtcdProcess, free_ports

pytestmark = pytest.mark.etcd


def test_policy_process_serves_and_stops_on_sigterm(etcd_server: EtcdProcess, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    log_path = tmp_path / "policy.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.policy",
                "--bind",
                f"127.0.0.1:{port}",
                "--etcd",
                etcd_server.endpoint,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = None
            for _ in range(150):
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                    break
                except grpc.RpcError:
                    time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.SERVING, log_path.read_text()
            answer = policy_pb2_grpc.PolicyServiceStub(channel).GetTableStatus(
                policy_pb2.GetTableStatusRequest(), timeout=10
            )
            assert answer.revision >= 1
        # Serving starts a moment before the signal handlers are in place: wait for the log line
        # that follows them, so SIGTERM meets the graceful path.
        for _ in range(100):
            if "policy service listening" in log_path.read_text():
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
        log = log_path.read_text()
        assert "policy service listening" in log
        assert "policy service stopping" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


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
