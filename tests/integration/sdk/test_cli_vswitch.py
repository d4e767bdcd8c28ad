"""``overland vswitch`` against a real vswitch agent (table-only: no datapath) that watches the table the
real policy service writes to a real etcd: the agent's status and table copy, ports and counters, a
datapath call refused with exit code 6, and a real agent process that serves its API over mutual TLS
(the same flags as every service) and reaches etcd over TLS as its host's user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.config import ServerConfig
from services.common.etcd_auth import host_user
from services.common.etcd_process import EtcdProcess, free_ports
from services.vswitch.config import AgentConfig
from services.vswitch.server import create_server
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS
from tests.integration.sdk.conftest import RealPolicy
from tests.unit.sdk.certs import make_pki
from tests.unit.sdk.cli_runner import invoke, invoke_json, seed_tenant
from tests.unit.vswitch.agent_helpers import wait_until


@pytest.fixture
def env(real_policy: RealPolicy, etcd_server: EtcdProcess) -> Iterator[dict[str, str]]:
    config = AgentConfig(
        host_name="host-a",
        pa_ip="198.18.0.1",
        etcd=etcd_server.etcd_config(host_user("host-a"), timeout=ETCD_TEST_DEADLINE_SECONDS),
        table_only=True,
        server=ServerConfig(bind="127.0.0.1:0", grace_seconds=1.0),
    )
    agent, port = create_server(config)
    try:
        yield {
            "OVERLAND_POLICY_ENDPOINT": real_policy.address,
            "OVERLAND_VSWITCH_ENDPOINT": f"127.0.0.1:{port}",
        }
    finally:
        agent.stop()


def _seed(env: dict[str, str]) -> int:
    seed_tenant(env, "a", 5001, "198.18.0.1")
    record = invoke_json(
        env,
        "policy",
        "lookup-record",
        "add",
        "--ca",
        "192.0.2.5",
        "--vsid",
        "5001",
        "--mac",
        "00:15:5d:00:00:05",
        "--pa",
        "198.18.0.1",
    )
    assert isinstance(record, dict)
    return int(record["revision"])


def _wait_applied(env: dict[str, str], revision: int) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while True:
        status = invoke_json(env, "vswitch", "status")
        assert isinstance(status, dict)
        if int(str(status["applied_revision"])) >= revision or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_vswitch_status_table_ports_counters(env: dict[str, str]) -> None:
    revision = _seed(env)
    status = _wait_applied(env, revision)
    assert int(str(status["applied_revision"])) >= revision
    assert status["host_name"] == "host-a"
    assert status["datapath"] is False
    table = invoke_json(env, "vswitch", "table")
    assert isinstance(table, dict)
    assert [r["ca"] for r in table["lookup_records"]] == ["192.0.2.5"]
    code, out, _ = invoke(env, "vswitch", "table")
    assert code == 0
    assert "applied revision" in out
    assert "192.0.2.5" in out
    assert invoke_json(env, "vswitch", "ports") == []
    counters = invoke_json(env, "vswitch", "counters")
    assert isinstance(counters, dict)
    assert counters["rx_packets"] == 0
    policy_status = invoke_json(env, "policy", "status")
    assert isinstance(policy_status, dict)
    assert "host-a" in [h["host_name"] for h in policy_status["hosts"]]


def test_datapath_calls_on_a_table_only_agent_exit_6(env: dict[str, str]) -> None:
    code, _, err = invoke(
        env, "vswitch", "attach", "--name", "tap-vm1", "--mac", "00:15:5d:00:00:05", "--vsid", "5001"
    )
    assert code == 6
    assert err.startswith("overland: FAILED_PRECONDITION")
    code, _, err = invoke(
        env,
        "vswitch",
        "attach",
        "--name",
        "a-name-that-is-too-long",
        "--mac",
        "02:00:00:00:00:05",
        "--vsid",
        "5001",
    )
    assert code == 3
    assert "port.name" in err


def registered(env: dict[str, str]) -> bool:
    code, out, _ = invoke(env, "--json", "vswitch", "status")
    return code == 0 and bool(json.loads(out).get("registered"))


def test_a_real_agent_serves_its_api_over_mutual_tls_only(etcd_server: EtcdProcess, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (port,) = free_ports(1)
    argv = [
        sys.executable, "-m", "services.vswitch", "--host-name", "host-a", "--pa-ip", "198.18.0.1",
        "--table-only", "--bind", f"127.0.0.1:{port}", "--tls-cert", str(pki.server_cert),
        "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca),
        *etcd_server.flags(host_user("host-a")),
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAND_")}
    log = tmp_path / "agent.log"
    with log.open("wb") as written:
        agent = subprocess.Popen(argv, env=environ, stdout=written, stderr=subprocess.STDOUT)
    env = {"OVERLAND_VSWITCH_ENDPOINT": f"127.0.0.1:{port}", "OVERLAND_TIMEOUT": "5"}
    tls = {"OVERLAND_TLS_CA": str(pki.ca)}
    client = tls | {"OVERLAND_TLS_CERT": str(pki.client_cert), "OVERLAND_TLS_KEY": str(pki.client_key)}
    try:
        # Up (or exited, which the status call below then reports), then registered on its lease through
        # etcd over TLS, as its host's own etcd user.
        wait_until(lambda: agent.poll() is not None or registered(env | client), 60, "the agent registered")
        code, out, err = invoke(env | client, "--json", "vswitch", "status")
        assert code == 0, f"{err}\n{log.read_text()}"
        assert json.loads(out)["host_name"] == "host-a"
        # Without a client certificate, or in plaintext, the API answers nothing.
        assert invoke(env | tls, "vswitch", "status")[0] == 7
        assert invoke(env, "vswitch", "status")[0] == 7
    finally:
        agent.terminate()
        agent.wait(timeout=30)
