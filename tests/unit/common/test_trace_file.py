"""Spans written by a service's Telemetry to the JSON-lines file come back as a tree in ``overland trace``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from overland.cli import app
from services.common.config import TelemetryConfig
from services.common.telemetry import Telemetry, child_or_linked_span, current_trace_context


def _write_trace(span_file: Path) -> str:
    writer = Telemetry(TelemetryConfig("policy", span_file=str(span_file), synchronous=True))
    agent = Telemetry(TelemetryConfig("vswitch", span_file=str(span_file), synchronous=True))
    with (
        writer.tracer.start_as_current_span("CreateLookupRecord") as root,
        writer.tracer.start_as_current_span("etcd txn"),
    ):
        stored = current_trace_context()
    with child_or_linked_span(agent.tracer, "apply", [stored], {"overland.host": "host1"}):
        pass
    writer.shutdown()
    agent.shutdown()
    return f"{root.get_span_context().trace_id:032x}"


def test_trace_show_prints_the_tree_across_services(tmp_path: Path) -> None:
    span_file = tmp_path / "spans.jsonl"
    trace_id = _write_trace(span_file)
    runner = CliRunner()
    shown = runner.invoke(app, ["trace", "show", trace_id, "--file", str(span_file)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert [line.split("] ")[1] for line in lines] == [
        "CreateLookupRecord",
        "etcd txn",
        "apply  overland.host=host1",
    ]
    depth = [len(line) - len(line.lstrip()) for line in lines]
    assert depth == [0, 2, 4]
    assert "[vswitch]" in lines[2]
    listed = runner.invoke(app, ["--json", "trace", "list", "--file", str(span_file)])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["trace_id"] == trace_id
    assert row["services"] == "policy,vswitch"
    assert row["spans"] == 3


def test_trace_show_reports_missing_traces_and_files(tmp_path: Path) -> None:
    span_file = tmp_path / "spans.jsonl"
    _write_trace(span_file)
    runner = CliRunner()
    missing = runner.invoke(app, ["trace", "show", "0" * 32, "--file", str(span_file)])
    assert missing.exit_code == 4
    no_file = runner.invoke(app, ["trace", "list", "--file", str(tmp_path / "nope.jsonl")])
    assert no_file.exit_code == 4


def test_metrics_go_to_the_metric_file_without_an_endpoint(tmp_path: Path) -> None:
    metric_file = tmp_path / "metrics.jsonl"
    telemetry = Telemetry(TelemetryConfig("vswitch", metric_file=str(metric_file), otlp_endpoint=""))
    assert telemetry.config.enabled
    telemetry.meter.create_counter("overland.test.things").add(3, {"overland.host": "h1"})
    telemetry.shutdown()
    (line,) = metric_file.read_text().splitlines()
    exported = json.loads(line)
    (metric,) = exported["resource_metrics"][0]["scope_metrics"][0]["metrics"]
    assert metric["name"] == "overland.test.things"
    assert metric["data"]["data_points"][0]["value"] == 3
