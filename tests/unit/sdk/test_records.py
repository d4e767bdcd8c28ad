"""Bulk-load files: JSON lines and CSV parse to the same records, and every bad line is named."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland import InvalidArgumentError
from overland.records import RecordFormat, guess_format, parse_records, record_from_mapping
from overland.v1 import types_pb2

RULES = ["encap", "none", "LOOKUP_RULE_ENCAP"]
TYPES = ["static", "l2-only", "gateway-wildcard", "LOOKUP_TYPE_L2_ONLY"]

rows = st.fixed_dictionaries(
    {
        "ca": st.sampled_from(["192.0.2.1", "198.51.100.7", "203.0.113.200"]),
        "vsid": st.integers(4096, 16777214),
        "mac": st.sampled_from(["00:15:5d:00:00:01", "02:00:00:ab:cd:ef"]),
        "pa": st.sampled_from(["198.18.0.1", "198.18.255.254"]),
        "vm_name": st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=12),
        "rule": st.sampled_from(RULES),
        "type": st.sampled_from(TYPES),
    }
)


def _as_jsonl(items: list[dict[str, object]]) -> str:
    return "\n".join(json.dumps(item) for item in items)


def _as_csv(items: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(items[0]))
    writer.writeheader()
    writer.writerows(items)
    return buffer.getvalue()


@given(st.lists(rows, min_size=1, max_size=20))
def test_jsonl_and_csv_give_the_same_records(items: list[dict[str, object]]) -> None:
    from_jsonl = parse_records(_as_jsonl(items), RecordFormat.JSONL)
    from_csv = parse_records(_as_csv(items), RecordFormat.CSV)
    assert from_jsonl == from_csv
    assert [r.vsid for r in from_jsonl] == [item["vsid"] for item in items]
    assert all(r.rule != types_pb2.LOOKUP_RULE_UNSPECIFIED for r in from_jsonl)


def test_short_and_full_enum_names() -> None:
    record = record_from_mapping(
        {"ca": "192.0.2.1", "vsid": "5001", "rule": "none", "type": "gateway-wildcard"}
    )
    assert record.rule == types_pb2.LOOKUP_RULE_NONE
    assert record.type == types_pb2.LOOKUP_TYPE_GATEWAY_WILDCARD
    assert record.vsid == 5001


def test_every_bad_line_is_reported_with_its_number() -> None:
    text = "\n".join(
        [
            '{"ca": "192.0.2.1", "vsid": 5001}',
            "not json",
            "",
            '{"ca": "192.0.2.2", "colour": "red"}',
            '{"ca": "192.0.2.3", "rule": "tunnel"}',
            "[1, 2]",
        ]
    )
    with pytest.raises(InvalidArgumentError) as caught:
        parse_records(text, RecordFormat.JSONL)
    fields = [v.field for v in caught.value.field_violations]
    assert fields == ["line 2", "line 4", "line 5", "line 6"]
    assert "colour" in caught.value.field_violations[1].description
    assert "encap" in caught.value.field_violations[2].description


def test_format_guess() -> None:
    assert guess_format("records.csv", '{"ca": 1}') is RecordFormat.CSV
    assert guess_format("records.jsonl", '{"ca": 1}') is RecordFormat.JSONL
    assert guess_format("-", "ca,vsid,mac") is RecordFormat.CSV
