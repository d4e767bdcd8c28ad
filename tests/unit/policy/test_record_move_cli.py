"""``overland policy lookup-record move`` and ``overland policy host get|list`` against the real policy
service on a MemoryKV, and the SDK calls under them."""

from __future__ import annotations

import pytest

from overland import ClientConfig, Endpoint, PolicyClient, Service
from overland.v1 import policy_pb2, policy_pb2_grpc
from services.common.memory_kv import MemoryKV
from services.policy import PolicyServer
from tests.unit.policy.support import PA_1, PA_2, VSID, record, seed
from tests.unit.policy.test_record_move import register_host
from tests.unit.sdk.cli_runner import invoke, invoke_json


@pytest.fixture
def env(
    policy_server: PolicyServer, memory_kv: MemoryKV, stub: policy_pb2_grpc.PolicyServiceStub
) -> dict[str, str]:
    seed(stub)
    for ca, mac in (("192.0.2.10", "02:00:00:00:00:10"), ("192.0.2.11", "02:00:00:00:00:11")):
        stub.CreateLookupRecord(policy_pb2.CreateLookupRecordRequest(lookup_record=record(ca, mac, vm="vm1")))
    register_host(memory_kv, "primary", PA_1)
    register_host(memory_kv, "dr-host", PA_2, alive=False)
    return {"OVERLAND_POLICY_ENDPOINT": f"127.0.0.1:{policy_server.port}"}


def test_host_get_and_list(env: dict[str, str]) -> None:
    host = invoke_json(env, "policy", "host", "get", "dr-host")
    assert isinstance(host, dict)
    assert (host["host_name"], host["pa_ip"], host["alive"]) == ("dr-host", PA_2, False)
    hosts = invoke_json(env, "policy", "host", "list")
    assert isinstance(hosts, list)
    assert [(h["host_name"], h["alive"]) for h in hosts] == [("dr-host", False), ("primary", True)]
    code, _out, err = invoke(env, "policy", "host", "get", "nowhere")
    assert code == 4
    assert "NOT_FOUND" in err


def test_move_a_vms_records_to_a_host_and_back(env: dict[str, str]) -> None:
    moved = invoke_json(
        env,
        "policy",
        "lookup-record",
        "move",
        "--host",
        "dr-host",
        f"{VSID}:192.0.2.10=192.0.2.110",
        f"{VSID}:192.0.2.11",
    )
    assert isinstance(moved, dict)
    assert moved["pa"] == PA_2
    assert [(r["ca"], r["pa"]) for r in moved["lookup_records"]] == [
        ("192.0.2.110", PA_2),
        ("192.0.2.11", PA_2),
    ]
    code, out, _err = invoke(
        env, "policy", "lookup-record", "move", "--pa", PA_1, f"{VSID}:192.0.2.110=192.0.2.10"
    )
    assert code == 0
    assert "moved to 198.18.0.1" in out
    config = ClientConfig(endpoints={Service.POLICY: Endpoint(env["OVERLAND_POLICY_ENDPOINT"])})
    with PolicyClient(config=config) as client:
        assert client.get_lookup_record(vsid=VSID, ca="192.0.2.10").pa == PA_1
        again = client.move_lookup_records(moves=[{"vsid": VSID, "ca": "192.0.2.11"}], host_name="primary")
        assert again.lookup_records[0].pa == PA_1
        assert [h.host_name for h in client.list_hosts()] == ["dr-host", "primary"]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--host", "nowhere", f"{VSID}:192.0.2.10"), 6, "FAILED_PRECONDITION"),
        (("--pa", PA_2, f"{VSID}:192.0.2.99"), 4, "NOT_FOUND"),
        (("--pa", PA_2, "--host", "dr-host", f"{VSID}:192.0.2.10"), 2, "exactly one of --host and --pa"),
        (("--pa", PA_2, "192.0.2.10"), 2, "not VSID:CA"),
    ],
)
def test_move_errors_exit_with_their_code(
    env: dict[str, str], args: tuple[str, ...], code: int, says: str
) -> None:
    exit_code, _out, err = invoke(env, "policy", "lookup-record", "move", *args)
    assert exit_code == code
    assert says in err
