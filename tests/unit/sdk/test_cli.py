"""The ``overland`` CLI (typer's CliRunner) against the in-memory policy service on a real gRPC server:
tables, --json, exit codes, one-line errors with field violations, bulk-load, watch, select-next-hop."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from overland.cli import app
from overland.cli.root import json_flag_first
from tests.unit.sdk.cli_runner import invoke, invoke_json, seed_tenant
from tests.unit.sdk.conftest import Running


def run(server: Running, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return invoke({"OVERLAND_POLICY_ENDPOINT": server.address, "OVERLAND_TIMEOUT": "5", **(env or {})}, *args)


def run_json(server: Running, *args: str) -> object:
    return invoke_json({"OVERLAND_POLICY_ENDPOINT": server.address}, *args)


def seed(server: Running) -> str:
    return seed_tenant({"OVERLAND_POLICY_ENDPOINT": server.address}, "contoso", 5001, "198.18.0.1")


def add_record(server: Running, index: int, *extra: str) -> tuple[int, str, str]:
    return run(
        server,
        "policy",
        "lookup-record",
        "add",
        "--ca",
        f"192.0.2.{index}",
        "--vsid",
        "5001",
        "--mac",
        f"00:15:5d:00:00:{index:02x}",
        "--pa",
        "198.18.0.1",
        "--vm",
        f"vm{index}",
        *extra,
    )


def test_lookup_record_add_and_list_as_table_and_json(policy_server: Running) -> None:
    rdid = seed(policy_server)
    code, out, _ = add_record(policy_server, 10, "--rule", "none", "--type", "l2-only")
    assert code == 0
    assert "192.0.2.10" in out
    assert "L2_ONLY" in out
    assert "LOOKUP_TYPE_L2_ONLY" not in out
    records = run_json(policy_server, "policy", "lookup-record", "list", "--rdid", rdid)
    assert isinstance(records, list)
    assert [(r["ca"], r["rule"], r["vm_name"]) for r in records] == [
        ("192.0.2.10", "LOOKUP_RULE_NONE", "vm10")
    ]
    code, table, _ = run(policy_server, "policy", "lookup-record", "list", "--vsid", "5001")
    assert code == 0
    assert "lookup records" in table
    assert "00:15:5d:00:00:0a" in table


def test_invalid_argument_prints_one_line_with_field_violations(policy_server: Running) -> None:
    seed(policy_server)
    # Well formed, so the CLI sends them; the service refuses a multicast MAC and PA.
    code, out, err = run(
        policy_server,
        "policy",
        "lookup-record",
        "add",
        "--ca",
        "192.0.2.10",
        "--vsid",
        "5001",
        "--mac",
        "01:00:5e:00:00:01",
        "--pa",
        "224.0.0.1",
    )
    assert code == 3
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("overland: INVALID_ARGUMENT: ")
    assert "lookup_record.mac" in lines[0]
    assert "lookup_record.pa" in lines[0]
    assert "Traceback" not in err


def test_a_malformed_address_or_number_is_a_one_line_usage_error_before_any_call(
    policy_server: Running,
) -> None:
    for option, value in (("--ca", "192.0.2.999"), ("--mac", "zz"), ("--vsid", "-1"), ("--vsid", str(2**24))):
        args = {"--ca": "192.0.2.10", "--vsid": "5001", "--mac": "02:00:00:00:00:01", "--pa": "198.18.0.1"}
        args[option] = value
        code, out, err = run(
            policy_server, "policy", "lookup-record", "add", *(x for kv in args.items() for x in kv)
        )
        assert code == 2
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("overland: usage: ")
        assert option in lines[0]
        assert "overland policy lookup-record add --help" in lines[0]
    assert policy_server.fake.calls["CreateLookupRecord"] == 0


def test_json_errors_are_one_json_object_on_stderr(policy_server: Running) -> None:
    code, _, err = run(policy_server, "--json", "policy", "routing-domain", "get", "missing")
    assert code == 4
    body = json.loads(err)
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["error"]["field_violations"] == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("policy", "routing-domain", "get", "nope"), 4),
        (("policy", "lookup-record", "add", "--ca", "192.0.2.1"), 2),
        (("policy", "no-such-command"), 2),
    ],
)
def test_exit_codes(policy_server: Running, args: tuple[str, ...], expected: int) -> None:
    code, _, _ = run(policy_server, *args)
    assert code == expected


def test_exit_codes_for_conflicts_preconditions_and_outages(policy_server: Running) -> None:
    seed(policy_server)
    assert add_record(policy_server, 1)[0] == 0
    assert add_record(policy_server, 1)[0] == 5
    code, _, err = run(
        policy_server,
        "policy",
        "lookup-record",
        "add",
        "--ca",
        "192.0.2.2",
        "--vsid",
        "5001",
        "--mac",
        "00:15:5d:00:00:02",
        "--pa",
        "198.18.7.7",
    )
    assert code == 6
    assert "lookup_record.pa" in err
    policy_server.fake.faults["GetTableStatus"] = [grpc.StatusCode.UNAVAILABLE] * 20
    code, _, err = run(policy_server, "policy", "status")
    assert code == 7
    assert err.startswith("overland: UNAVAILABLE")


def test_stale_expected_revision_exits_6(policy_server: Running) -> None:
    seed(policy_server)
    add_record(policy_server, 3)
    args = ("policy", "lookup-record", "update", "--vsid", "5001", "--ca", "192.0.2.3")
    updated = run_json(policy_server, *args, "--vm", "moved", "--pa", "198.18.0.1")
    assert isinstance(updated, dict)
    assert updated["vm_name"] == "moved"
    code, _, err = run(policy_server, *args, "--vm", "again", "--expected-revision", "1")
    assert code == 6
    assert "ABORTED" in err


def test_bad_endpoint_configuration_is_a_usage_error(policy_server: Running) -> None:
    code, _, err = run(policy_server, "policy", "status", env={"OVERLAND_POLICY_ENDPOINT": "nowhere"})
    assert code == 2
    assert "host:port" in err


def test_endpoint_option_overrides_environment(policy_server: Running) -> None:
    env = {"OVERLAND_POLICY_ENDPOINT": "127.0.0.1:1"}
    code, out, _ = run(policy_server, "policy", "--endpoint", policy_server.address, "status", env=env)
    assert code == 0
    assert "store revision" in out


def test_status_json(policy_server: Running) -> None:
    status = run_json(policy_server, "policy", "status")
    assert isinstance(status, dict)
    assert status["hosts"][0]["host_name"] == "host-a"


def test_select_next_hop_prints_the_reasons(policy_server: Running) -> None:
    seed(policy_server)
    add_record(policy_server, 20)
    args = (
        "policy",
        "select-next-hop",
        "--vsid",
        "5001",
        "--source",
        "192.0.2.1",
        "--destination",
        "192.0.2.20",
    )
    code, out, _ = run(policy_server, *args)
    assert code == 0
    assert "198.18.0.1" in out
    assert "1. source 192.0.2.1" in out
    assert "2. destination 192.0.2.20" in out
    hop = run_json(policy_server, *args)
    assert isinstance(hop, dict)
    assert hop["found"] is True
    assert len(hop["reasons"]) == 2
    code, _, _ = run(
        policy_server, "policy", "select-next-hop", "--source", "192.0.2.1", "--destination", "x"
    )
    assert code == 2


def test_bulk_load_jsonl_and_csv(policy_server: Running, tmp_path: Path) -> None:
    rdid = seed(policy_server)
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(
                {"ca": f"192.0.2.{i}", "vsid": 5001, "mac": f"00:15:5d:00:01:{i:02x}", "pa": "198.18.0.1"}
            )
            for i in range(1, 51)
        )
    )
    loaded = run_json(policy_server, "policy", "bulk-load", str(jsonl), "--chunk", "20")
    assert isinstance(loaded, dict)
    assert loaded["applied"] == 50
    assert policy_server.fake.bulk_messages == 3
    csv_file = tmp_path / "more.csv"
    csv_file.write_text("ca,vsid,mac,pa,rule\n192.0.2.100,5001,00:15:5d:00:02:01,198.18.0.1,none\n")
    assert run(policy_server, "policy", "bulk-load", str(csv_file))[0] == 0
    records = run_json(policy_server, "policy", "lookup-record", "list", "--rdid", rdid)
    assert isinstance(records, list)
    assert len(records) == 51


def test_bulk_load_rejects_a_bad_file_before_sending(policy_server: Running, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ca": "192.0.2.1", "vsid": 5001}\n{"ca": "192.0.2.2", "rule": "tunnel"}\n')
    code, _, err = run(policy_server, "policy", "bulk-load", str(bad))
    assert code == 3
    assert "line 2" in err
    assert policy_server.fake.calls["BulkApplyLookupRecords"] == 0
    code, _, _ = run(policy_server, "policy", "bulk-load", str(tmp_path / "missing.jsonl"))
    assert code == 2


def test_watch_from_revision_with_count(policy_server: Running) -> None:
    status = run_json(policy_server, "policy", "status")
    assert isinstance(status, dict)
    start = str(status["revision"])
    for tenant in ("a", "b", "c"):
        run_json(policy_server, "policy", "routing-domain", "add", "--tenant", tenant)
    code, out, _ = run(policy_server, "--json", "policy", "watch", "--from", start, "--count", "3")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["entry"]["routing_domain"]["tenant_name"] for e in events] == ["a", "b", "c"]
    code, out, _ = run(policy_server, "policy", "watch", "--from", start, "--count", "1")
    assert code == 0
    assert "PUT\trouting_domain" in out


def test_routing_domain_update_and_remove(policy_server: Running) -> None:
    rdid = seed(policy_server)
    updated = run_json(policy_server, "policy", "routing-domain", "update", rdid, "--description", "blue")
    assert isinstance(updated, dict)
    assert (updated["tenant_name"], updated["description"]) == ("contoso", "blue")
    removed = run_json(policy_server, "policy", "routing-domain", "remove", rdid)
    assert isinstance(removed, dict)
    assert int(removed["revision"]) > int(updated["revision"])
    assert run(policy_server, "policy", "routing-domain", "get", rdid)[0] == 4


def test_help_lists_the_hnv_style_commands() -> None:
    result = CliRunner().invoke(app, ["policy", "--help"])
    assert result.exit_code == 0
    for command in ("routing-domain", "subnet", "provider-address", "lookup-record", "route", "bulk-load"):
        assert command in result.stdout


def test_json_flag_works_after_the_command(policy_server: Running) -> None:
    run_json(policy_server, "policy", "routing-domain", "add", "--tenant", "late-flag")
    code, out, err = run(policy_server, "policy", "routing-domain", "list", "--json")
    assert code == 0, err
    assert [d["tenant_name"] for d in json.loads(out)] == ["late-flag"]


@given(st.lists(st.sampled_from(["a", "--json", "--x", "1"]), max_size=8), st.lists(st.just("z"), max_size=2))
def test_json_flag_first_keeps_the_other_arguments_in_order(before: list[str], after: list[str]) -> None:
    args = [*before, "--", "--json", *after]
    moved = json_flag_first(args)
    head = moved[: moved.index("--")]
    assert moved[moved.index("--") :] == ["--", "--json", *after]
    assert [a for a in head if a != "--json"] == [a for a in before if a != "--json"]
    assert (head[:1] == ["--json"]) == ("--json" in before)
