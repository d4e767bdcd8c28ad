"""Quantities as people read them (pure): byte counts in binary units, for the CLI and for the messages
services write."""

from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def size(count: int) -> str:
    """Bytes in binary units with three significant digits (four from 1000 to 1023): "0 B", "512 B",
    "1.5 MiB", "1010 MiB"."""
    value = float(count)
    for unit in UNITS:
        if value < 1024 or unit == UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            # 1000-1023 would read "1e+03" with three significant digits: four digits then.
            return f"{value:.3g} {unit}" if value < 999.5 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
