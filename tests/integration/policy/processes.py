"""``python -m services.policy`` as a process for the tests: started on a real etcd, waited for until it
serves (and until its signal handlers are in)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.etcd_auth import POLICY_USER
from services.common.etcd_process import EtcdProcess


def start_policy(etcd: EtcdProcess, port: int, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.policy",
                "--bind",
                f"127.0.0.1:{port}",
                # As deployed: over TLS as the policy service's own etcd user (docs/security.md).
                *etcd.flags(POLICY_USER),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


def wait_serving(target: str, log_path: Path) -> None:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = None
        for _ in range(150):
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                break
            except grpc.RpcError:
                time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.SERVING, log_path.read_text()


def wait_logged(log_path: Path, line: str, times: int = 1) -> None:
    """Serving starts a moment before the signal handlers are in place: wait for the log line that
    follows them, so SIGTERM meets the graceful path."""
    for _ in range(200):
        if log_path.read_text().count(line) >= times:
            return
        time.sleep(0.1)
    raise AssertionError(f"{line!r} not logged {times} times: {log_path.read_text()}")
