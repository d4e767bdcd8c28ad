"""``overland trace list|show``: read the span file the services write when no OTLP endpoint is set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from overland.cli.common import new_table, read_text_file, settings
from overland.cli.groups import GROUPS, new_typer
from overland.cli.params import INT64_MAX
from overland.defaults import SPAN_FILE_ENV
from overland.errors import NotFoundError
from overland.traces import load_spans, render_tree, trace_roots

app = new_typer("trace", GROUPS["trace"].help)

SpanFile = Annotated[
    Path | None,
    typer.Option("--file", help="Span file (default: $OVERLAND_SPAN_FILE or .overland/spans.jsonl)."),
]


def _span_file(path: Path | None) -> Path:
    chosen = path or Path(os.environ.get(SPAN_FILE_ENV) or ".overland/spans.jsonl")
    if not chosen.is_file():
        raise NotFoundError(f"no span file at {chosen}")
    # Read here, so that an unreadable file is a usage error naming it (load_spans reads it again
    # from the page cache).
    read_text_file(str(chosen), "'--file'")
    return chosen


@app.command("list")
def list_traces(
    ctx: typer.Context,
    file: SpanFile = None,
    limit: Annotated[int, typer.Option(help="Newest traces to show.", min=0, max=INT64_MAX)] = 20,
) -> None:
    """The newest traces: id, root span, services, span count and duration."""
    spans = load_spans([_span_file(file)])
    traces: dict[str, list[dict[str, object]]] = {}
    for span in spans:
        traces.setdefault(str(span["trace_id"]), []).append(span)
    rows = []
    for trace_id, members in traces.items():
        start = min(int(str(s.get("start") or 0)) for s in members)
        end = max(int(str(s.get("end") or 0)) for s in members)
        roots = [s for s in members if not s.get("parent_span_id")] or members
        rows.append(
            {
                "trace_id": trace_id,
                "root": str(min(roots, key=lambda s: int(str(s.get("start") or 0))).get("name", "")),
                "services": ",".join(sorted({str(s.get("service", "")) for s in members})),
                "spans": len(members),
                "duration_ms": round((end - start) / 1e6, 2),
                "start": start,
            }
        )
    rows = sorted(rows, key=lambda r: int(str(r["start"])))[-limit:]
    current = settings(ctx)
    if current.json_output:
        typer.echo(json.dumps(rows))
        return
    table = new_table("trace_id", "root", "services", "spans", "duration_ms")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("trace_id", "root", "services", "spans", "duration_ms")))
    current.out.print(table)


@app.command("show")
def show_trace(ctx: typer.Context, trace_id: str, file: SpanFile = None) -> None:
    """One trace as a tree: offset from its start, duration, service and span name."""
    roots = trace_roots(load_spans([_span_file(file)]), trace_id)
    if not roots:
        raise NotFoundError(f"no spans of trace {trace_id}")
    lines = render_tree(roots)
    if settings(ctx).json_output:
        typer.echo(json.dumps(lines))
        return
    for line in lines:
        typer.echo(line)
