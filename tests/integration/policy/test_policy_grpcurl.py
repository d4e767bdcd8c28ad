"""grpcurl, a client nobody here wrote, lists, describes and calls the policy service through reflection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from services.policy import PolicyServer


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))
    return subprocess.run(
        [binary, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_grpcurl_lists_describes_and_calls(policy_on_etcd: PolicyServer) -> None:
    address = f"127.0.0.1:{policy_on_etcd.port}"
    listed = _grpcurl(address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"overland.v1.PolicyService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = _grpcurl(address, "describe", "overland.v1.LookupRecord")
    assert described.returncode == 0, described.stderr
    assert "string ca = 1;" in described.stdout
    created = _grpcurl(
        "-d",
        json.dumps({"provider_address": {"host_name": "host1", "pa_ip": "198.18.0.1", "prefix_length": 24}}),
        address,
        "overland.v1.PolicyService/CreateProviderAddress",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["pa_ip"] == "198.18.0.1"
    health = _grpcurl(address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_grpcurl_shows_the_bad_request_details(policy_on_etcd: PolicyServer) -> None:
    address = f"127.0.0.1:{policy_on_etcd.port}"
    bad = _grpcurl(
        "-d",
        json.dumps({"provider_address": {"host_name": "h", "pa_ip": "198.18.0.300", "prefix_length": 24}}),
        address,
        "overland.v1.PolicyService/CreateProviderAddress",
    )
    assert bad.returncode != 0
    assert "InvalidArgument" in bad.stderr
    assert "provider_address.pa_ip" in bad.stderr
