"""The ``overland`` command's value checks: every value is checked where it is typed.

A value that does not fit its option (a negative or 2^64 VSID, an address that is not one, a
timeout of ``nan``) is a usage error, exit 2, one line on stderr, before any call: it never reaches
protobuf (which raises on an out-of-range integer) or gRPC (which raises on a bad deadline). The
service still checks what it receives; these catch what would not even make a request. Integers take
their range from typer (``min``/``max``, the constants here); other values a ``parser`` from here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import typer

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
# Revisions and counts are proto int64s, never negative.
INT64_MAX = 2**63 - 1

# A deadline or interval longer than a year is a typo.
MAX_SECONDS = 366 * 86400.0
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")


def _shown(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _seconds(value: Any, *, zero: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{_shown(value)} is not a number of seconds") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero) or number > MAX_SECONDS:
        low = "[0" if zero else "(0"
        raise typer.BadParameter(f"{_shown(value)} is not a number of seconds in {low}, {MAX_SECONDS:g}]")
    return number


def seconds(value: Any) -> float:
    """A deadline: positive and finite (``nan``, ``inf`` and 0 are refused)."""
    return _seconds(value, zero=False)


def interval(value: Any) -> float:
    """A pause between refreshes: finite, 0 or more."""
    return _seconds(value, zero=True)


def ipv4(value: Any) -> str:
    """An IPv4 address in dotted quads ("" left as it is: an optional value not given)."""
    import ipaddress  # noqa: PLC0415 - the root's --timeout loads this module: keep --help lean

    text = str(value).strip()
    if not text:
        return ""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise typer.BadParameter(f"{_shown(value)} is not an IPv4 address") from None


def prefix(value: Any) -> str:
    """An IPv4 CIDR prefix; host bits are the service's to report (with its suggestion)."""
    import ipaddress  # noqa: PLC0415 - see ipv4

    text = str(value).strip()
    try:
        if "/" not in text:
            raise ValueError(text)
        ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise typer.BadParameter(f"{_shown(value)} is not an IPv4 CIDR prefix such as 192.0.2.0/24") from None
    return text


def mac(value: Any) -> str:
    """A MAC address aa:bb:cc:dd:ee:ff (``-`` separators too; "" left as it is)."""
    text = str(value).strip()
    if text and not _MAC.fullmatch(text):
        raise typer.BadParameter(f"{_shown(value)} is not a MAC address aa:bb:cc:dd:ee:ff")
    return text
