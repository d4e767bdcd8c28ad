"""The ``overland`` CLI and the SDK against the real policy service on a real etcd: the HNV flow
through CliRunner and through a real ``overland`` subprocess, exit codes, field violations on stderr,
bulk-load, watch, mutual TLS, the asyncio client, and a lost etcd reported as exit 7 without a hang."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import overland.aio
from overland import ClientConfig, Endpoint, RetryPolicy, Service
from overland.config import TlsFiles
from services.common.etcd_process import EtcdProcess
from tests.integration.sdk.conftest import RealPolicy, start_policy
from tests.unit.sdk.certs import make_pki
from tests.unit.sdk.cli_runner import invoke, invoke_json, seed_tenant

OVERLAND = Path(sys.executable).with_name("overland")


def cli(policy: RealPolicy, *args: str) -> tuple[int, str, str]:
    return invoke({"OVERLAND_POLICY_ENDPOINT": policy.address}, *args)


def cli_json(policy: RealPolicy, *args: str) -> object:
    return invoke_json({"OVERLAND_POLICY_ENDPOINT": policy.address}, *args)


def subprocess_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAND_")} | env
    return subprocess.run(
        [str(OVERLAND), *args], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def tenant(policy: RealPolicy, name: str, vsid: int, pa: str) -> str:
    return seed_tenant({"OVERLAND_POLICY_ENDPOINT": policy.address}, name, vsid, pa)


def record_args(ca: str, vsid: int, mac: str, pa: str) -> list[str]:
    return [
        "policy",
        "lookup-record",
        "add",
        "--ca",
        ca,
        "--vsid",
        str(vsid),
        "--mac",
        mac,
        "--pa",
        pa,
        "--vm",
        ca,
    ]


def test_hnv_flow_two_tenants_with_the_same_ca_space(real_policy: RealPolicy) -> None:
    blue = tenant(real_policy, "blue", 5001, "198.18.0.1")
    red = tenant(real_policy, "red", 6001, "198.18.0.2")
    assert cli(real_policy, *record_args("192.0.2.10", 5001, "00:15:5d:00:00:0a", "198.18.0.1"))[0] == 0
    assert cli(real_policy, *record_args("192.0.2.11", 5001, "00:15:5d:00:00:0b", "198.18.0.2"))[0] == 0
    assert cli(real_policy, *record_args("192.0.2.10", 6001, "00:15:5d:00:01:0a", "198.18.0.2"))[0] == 0
    blue_records = cli_json(real_policy, "policy", "lookup-record", "list", "--rdid", blue)
    red_records = cli_json(real_policy, "policy", "lookup-record", "list", "--rdid", red)
    assert isinstance(blue_records, list)
    assert isinstance(red_records, list)
    assert sorted(r["ca"] for r in blue_records) == ["192.0.2.10", "192.0.2.11"]
    assert [(r["ca"], r["pa"]) for r in red_records] == [("192.0.2.10", "198.18.0.2")]

    code, out, _ = cli(
        real_policy,
        "policy",
        "select-next-hop",
        "--vsid",
        "5001",
        "--source",
        "192.0.2.10",
        "--destination",
        "192.0.2.11",
    )
    assert code == 0
    assert "198.18.0.2" in out
    assert "1. " in out
    hop = cli_json(
        real_policy,
        "policy",
        "select-next-hop",
        "--rdid",
        red,
        "--source",
        "192.0.2.10",
        "--destination",
        "192.0.2.10",
    )
    assert isinstance(hop, dict)
    assert hop["reasons"]

    moved = cli_json(
        real_policy,
        "policy",
        "lookup-record",
        "update",
        "--vsid",
        "5001",
        "--ca",
        "192.0.2.11",
        "--pa",
        "198.18.0.1",
    )
    assert isinstance(moved, dict)
    assert moved["pa"] == "198.18.0.1"
    status = cli_json(real_policy, "policy", "status")
    assert isinstance(status, dict)
    assert int(status["revision"]) >= int(moved["revision"])


def test_errors_exit_codes_and_field_violations(real_policy: RealPolicy) -> None:
    tenant(real_policy, "blue", 5001, "198.18.0.1")
    assert cli(real_policy, *record_args("192.0.2.10", 5001, "00:15:5d:00:00:0a", "198.18.0.1"))[0] == 0

    code, _, err = cli(real_policy, *record_args("192.0.2.12", 5001, "00:15:5d:00:00:0a", "198.18.0.1"))
    assert code == 5, err
    assert err.startswith("overland: ALREADY_EXISTS")

    code, _, err = cli(real_policy, *record_args("192.0.2.13", 5001, "00:15:5d:00:00:0d", "198.18.9.9"))
    assert code == 6, err
    assert "pa" in err

    # Well formed but refused by the service: INVALID_ARGUMENT, exit 3, one line naming the field.
    code, _, err = cli(real_policy, *record_args("192.0.2.14", 5001, "01:00:5e:00:00:01", "198.18.0.1"))
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1
    assert "lookup_record.mac" in err
    # Not even well formed: a usage error, exit 2, before any call.
    code, _, err = cli(real_policy, *record_args("192.0.2.14", 5001, "not-a-mac", "198.18.0.1"))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    assert "--mac" in err
    code, _, err = cli(
        real_policy, "policy", "subnet", "add", "--vsid", "4095", "--rdid", "x", "--prefix", "x"
    )
    assert code == 2, err
    assert "--vsid" in err
    # The CA is the subnet's gateway (the first host address of 192.0.2.0/24): no VM may have it.
    code, _, err = cli(real_policy, *record_args("192.0.2.1", 5001, "00:15:5d:00:00:01", "198.18.0.1"))
    assert code == 6, err
    assert "lookup_record.ca" in err

    code, _, _ = cli(real_policy, "policy", "lookup-record", "get", "--vsid", "5001", "--ca", "192.0.2.99")
    assert code == 4

    code, _, err = cli(
        real_policy,
        "policy",
        "lookup-record",
        "remove",
        "--vsid",
        "5001",
        "--ca",
        "192.0.2.10",
        "--expected-revision",
        "1",
    )
    assert code == 6, err
    assert "ABORTED" in err


def test_bulk_load_watch_and_paged_list(real_policy: RealPolicy, tmp_path: Path) -> None:
    rdid = tenant(real_policy, "blue", 5001, "198.18.0.1")
    status = cli_json(real_policy, "policy", "status")
    assert isinstance(status, dict)
    start = str(status["revision"])
    records = tmp_path / "records.jsonl"
    records.write_text(
        "\n".join(
            json.dumps(
                {
                    "ca": f"192.0.2.{i % 250 + 2}",
                    "vsid": 5001 + i // 250,
                    "mac": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
                    "pa": "198.18.0.1",
                }
            )
            for i in range(250)
        )
    )
    loaded = cli_json(real_policy, "policy", "bulk-load", str(records), "--chunk", "100")
    assert isinstance(loaded, dict)
    assert int(loaded["applied"]) == 250
    listed = cli_json(real_policy, "policy", "lookup-record", "list", "--rdid", rdid)
    assert isinstance(listed, list)
    assert len(listed) == 250
    code, out, _ = cli(real_policy, "--json", "policy", "watch", "--from", start, "--count", "250")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 250
    assert all(e["type"] == "TYPE_PUT" for e in events)
    assert {e["entry"]["lookup_record"]["ca"] for e in events} == {r["ca"] for r in listed}


def test_real_subprocess_json_and_error_line(real_policy: RealPolicy) -> None:
    env = {"OVERLAND_POLICY_ENDPOINT": real_policy.address, "OVERLAND_TIMEOUT": "10"}
    created = subprocess_cli(["--json", "policy", "routing-domain", "add", "--tenant", "green"], env)
    assert created.returncode == 0, created.stderr
    rdid = json.loads(created.stdout)["rdid"]
    listed = subprocess_cli(["--json", "policy", "routing-domain", "list"], env)
    assert [d["rdid"] for d in json.loads(listed.stdout)] == [rdid]
    table = subprocess_cli(["policy", "routing-domain", "get", rdid], env)
    assert table.returncode == 0
    assert "green" in table.stdout
    bad = subprocess_cli(
        ["policy", "subnet", "add", "--vsid", "5002", "--rdid", rdid, "--prefix", "192.0.2.1/24"], env
    )
    assert bad.returncode == 3
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    for vsid in ("-1", str(2**24), str(10**20)):
        out_of_range = subprocess_cli(
            ["policy", "subnet", "add", "--vsid", vsid, "--rdid", rdid, "--prefix", "192.0.2.0/24"], env
        )
        assert out_of_range.returncode == 2
        assert out_of_range.stderr.count("\n") == 1
        assert "Traceback" not in out_of_range.stderr
    missing = subprocess_cli(
        ["--json", "policy", "routing-domain", "get", "00000000-0000-0000-0000-000000000000"], env
    )
    assert missing.returncode == 4
    assert json.loads(missing.stderr)["error"]["code"] == "NOT_FOUND"
    usage = subprocess_cli(["policy", "lookup-record", "add"], env)
    assert usage.returncode == 2


def test_lost_etcd_is_exit_7_not_a_hang(real_policy: RealPolicy) -> None:
    real_policy.etcd.stop()
    # The service's etcd deadline is 2 s (POLICY_ETCD_DEADLINE), so 8 s leaves room for retries.
    env = {"OVERLAND_POLICY_ENDPOINT": real_policy.address, "OVERLAND_TIMEOUT": "8"}
    listed = subprocess_cli(["policy", "routing-domain", "list"], env)
    assert listed.returncode == 7, listed.stderr
    assert "UNAVAILABLE" in listed.stderr


def test_mutual_tls_against_the_real_service(etcd_server: EtcdProcess, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    policy = start_policy(etcd_server, TlsFiles(cert=pki.server_cert, key=pki.server_key, ca=pki.ca))
    try:
        env = {"OVERLAND_POLICY_ENDPOINT": policy.address, "OVERLAND_TIMEOUT": "5"}
        tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
        ok = subprocess_cli([*tls, "--json", "policy", "routing-domain", "add", "--tenant", "secure"], env)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["tenant_name"] == "secure"
        no_cert = subprocess_cli(["--tls-ca", str(pki.ca), "policy", "routing-domain", "list"], env)
        assert no_cert.returncode == 7
        env_tls = env | {
            "OVERLAND_TLS_CA": str(pki.ca),
            "OVERLAND_TLS_CERT": str(pki.client_cert),
            "OVERLAND_TLS_KEY": str(pki.client_key),
        }
        assert subprocess_cli(["policy", "routing-domain", "list"], env_tls).returncode == 0
    finally:
        policy.server.stop()


def test_asyncio_client_against_the_real_service(real_policy: RealPolicy) -> None:
    config = ClientConfig(
        endpoints={Service.POLICY: Endpoint(real_policy.address)},
        timeout=10,
        retry=RetryPolicy(initial_backoff=0.05, max_backoff=0.2),
    )

    async def scenario() -> tuple[list[str], list[str]]:
        async with overland.aio.PolicyClient(config=config) as client:
            start = (await client.get_table_status()).revision
            for name in ("a", "b", "c"):
                await client.create_routing_domain(tenant_name=name)
            listed = sorted([d.tenant_name async for d in client.list_routing_domains()])
            watched: list[str] = []
            async for response in client.watch_table(start_revision=start):
                watched.extend(e.entry.routing_domain.tenant_name for e in response.events)
                if len(watched) >= 3:
                    break
            return listed, watched

    listed, watched = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert listed == ["a", "b", "c"]
    assert watched == ["a", "b", "c"]


@pytest.mark.parametrize("page_size", [1, 7])
def test_sdk_pages_through_the_real_service(real_policy: RealPolicy, page_size: int) -> None:
    config = ClientConfig(
        endpoints={Service.POLICY: Endpoint(real_policy.address)}, timeout=10, page_size=page_size
    )
    with overland.PolicyClient(config=config) as client:
        for index in range(15):
            client.create_routing_domain(tenant_name=f"t{index}")
        names = sorted(d.tenant_name for d in client.list_routing_domains())
    assert names == sorted(f"t{index}" for index in range(15))
