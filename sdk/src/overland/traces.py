"""Read the JSON-lines span file the services write when no OTLP endpoint is set, and build trace trees.

Pure data handling with no OpenTelemetry dependency, so the CLI can show a trace on a machine with only
the SDK installed: ``overland trace show TRACE_ID``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SpanNode:
    """One span and its children, ordered by start time."""

    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (int(self.span.get("end") or 0) - int(self.span.get("start") or 0)) / 1e6


def _is_span(record: object) -> bool:
    """Whether a JSON value has the shape of a span record (what the functions below rely on)."""
    if not isinstance(record, dict):
        return False
    optional_ints = all(
        record.get(name) is None or (isinstance(record[name], int) and not isinstance(record[name], bool))
        for name in ("start", "end")
    )
    links = record.get("links", [])
    return (
        isinstance(record.get("trace_id"), str)
        and isinstance(record.get("span_id"), str)
        and optional_ints
        and isinstance(record.get("parent_span_id") or "", str)
        and isinstance(record.get("attributes", {}), dict)
        and isinstance(links, list)
        and all(isinstance(link, dict) for link in links)
    )


def load_spans(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every span record of the given files; unreadable lines, and records that are not spans, are
    skipped (a writer may be mid-line)."""
    spans = []
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if _is_span(record):
                spans.append(record)
    return spans


def trace_roots(spans: Iterable[dict[str, Any]], trace_id: str) -> list[SpanNode]:
    """The span trees of one trace. Spans whose parent is missing (or in another trace, for linked
    spans) become roots; spans linked to the trace from another trace are attached as roots too."""
    trace_id = trace_id.lower()
    own = [s for s in spans if s.get("trace_id") == trace_id]
    linked = [
        s
        for s in spans
        if s.get("trace_id") != trace_id
        and any(link.get("trace_id") == trace_id for link in s.get("links", []))
    ]
    nodes = {s["span_id"]: SpanNode(s) for s in own + linked}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.get("parent_span_id", ""))
        (parent.children if parent else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: int(n.span.get("start") or 0))
    roots.sort(key=lambda n: int(n.span.get("start") or 0))
    return roots


def render_tree(roots: list[SpanNode]) -> list[str]:
    """Text lines: indentation for depth, then duration, service, name and the key attributes."""
    if not roots:
        return []
    origin = min(int(r.span.get("start") or 0) for r in roots)
    lines: list[str] = []

    def walk(node: SpanNode, depth: int) -> None:
        span = node.span
        offset_ms = (int(span.get("start") or 0) - origin) / 1e6
        status = "" if span.get("status") != "ERROR" else f"  ERROR {span.get('status_description', '')}"
        link = "  (linked)" if span.get("links") and not span.get("parent_span_id") else ""
        attrs = " ".join(
            f"{k}={v}" for k, v in sorted(span.get("attributes", {}).items()) if k.startswith("overland.")
        )
        lines.append(
            f"{'  ' * depth}+{offset_ms:9.2f} ms {node.duration_ms:9.2f} ms  [{span.get('service', '')}] "
            f"{span.get('name', '')}{link}{status}{'  ' + attrs if attrs else ''}"
        )
        for child in node.children:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return lines
