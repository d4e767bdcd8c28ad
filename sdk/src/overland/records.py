"""Lookup records from text: JSON lines or CSV, for bulk loads (``overland policy bulk-load``).

Pure parsing with line-numbered errors, so a bad file is rejected whole before anything is sent.
Each record has the ``LookupRecord`` field names (``ca``, ``vsid``, ``mac``, ``pa``, ``vm_name``,
``rule``, ``type``); ``rule`` and ``type`` accept the short CLI spellings (``encap``, ``l2-only``) as
well as the enum names (``LOOKUP_RULE_ENCAP``).
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format

from overland.errors import FieldViolation, InvalidArgumentError
from overland.v1.types_pb2 import LookupRecord, LookupRule, LookupType

RECORD_FIELDS = ("ca", "vsid", "mac", "pa", "vm_name", "rule", "type")
# How many bad lines an error lists: enough to fix a file, short enough to read.
MAX_REPORTED = 20


class RecordFormat(enum.Enum):
    JSONL = "jsonl"
    CSV = "csv"


def short_enum_name(full_name: str, prefix: str) -> str:
    """``LOOKUP_TYPE_L2_ONLY`` -> ``l2-only``: the spelling the CLI shows and accepts."""
    return full_name.removeprefix(prefix).lower().replace("_", "-")


def enum_value(value: str, enum_type: Any, prefix: str) -> str:
    """The full name of an enum value given its short or full name; ValueError if unknown."""
    for name in enum_type.keys():  # noqa: SIM118 - a protobuf enum wrapper is not a dict
        if value in (name, short_enum_name(name, prefix)):
            return str(name)
    choices = ", ".join(short_enum_name(n, prefix) for n in enum_type.keys() if not n.endswith("UNSPECIFIED"))  # noqa: SIM118
    raise ValueError(f"{value!r} is not one of {choices}")


def record_from_mapping(data: Mapping[str, Any]) -> LookupRecord:
    """A lookup record from a mapping of its fields; ValueError when a field is unknown or malformed."""
    unknown = sorted(str(key) for key in set(data) - set(RECORD_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; expected {', '.join(RECORD_FIELDS)}")
    fields = {key: value for key, value in data.items() if value not in (None, "")}
    if "rule" in fields:
        fields["rule"] = enum_value(str(fields["rule"]), LookupRule, "LOOKUP_RULE_")
    if "type" in fields:
        fields["type"] = enum_value(str(fields["type"]), LookupType, "LOOKUP_TYPE_")
    if "vsid" in fields:
        fields["vsid"] = int(fields["vsid"])
    try:
        return json_format.ParseDict(fields, LookupRecord())
    except json_format.ParseError as error:
        raise ValueError(str(error)) from None


def _rows(text: str, fmt: RecordFormat) -> Iterable[tuple[int, Mapping[str, Any] | Exception]]:
    if fmt is RecordFormat.CSV:
        # newline="" so that quoted fields keep their line breaks (the csv module's requirement).
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            yield reader.line_num, row
        return
    # Only "\n" ends a JSON line: str.splitlines would also split on separators JSON strings may hold.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, error
            continue
        yield number, row if isinstance(row, dict) else ValueError("not a JSON object")


def parse_records(text: str, fmt: RecordFormat) -> list[LookupRecord]:
    """All records of a file's text, or InvalidArgumentError naming the bad lines (up to ``MAX_REPORTED``)."""
    records: list[LookupRecord] = []
    violations: list[FieldViolation] = []
    for number, row in _rows(text, fmt):
        try:
            if isinstance(row, Exception):
                raise row
            records.append(record_from_mapping(row))
        except ValueError as error:
            violations.append(FieldViolation(f"line {number}", str(error)))
    if violations:
        shown = violations[:MAX_REPORTED]
        raise InvalidArgumentError(f"{len(violations)} bad record(s)", shown)
    return records


def guess_format(name: str, text: str) -> RecordFormat:
    """CSV for ``*.csv`` or text that does not start with a JSON object; JSON lines otherwise."""
    if name.lower().endswith(".csv"):
        return RecordFormat.CSV
    return RecordFormat.JSONL if text.lstrip().startswith("{") else RecordFormat.CSV
