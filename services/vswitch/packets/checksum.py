"""The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

Long sums use numpy once ``enable_vector_sums`` has imported it; until then (and for short inputs) one
big-int reduction gives the same result, only slower on 64 KiB. numpy is kept off the import path
because it is a tenth of a second of a restarting agent's start, before its datapath forwards; the
datapath imports it from a background thread once it runs.
"""

from __future__ import annotations

from types import ModuleType

# Below this, numpy's call overhead costs more than the big-int path.
_VECTOR_MIN_BYTES = 256


class _Vector:
    """numpy, once imported by ``enable_vector_sums``."""

    numpy: ModuleType | None = None


def enable_vector_sums() -> None:
    """Import numpy and use it for long sums from now on (idempotent, thread-safe)."""
    import numpy  # noqa: PLC0415 - deferred on purpose, see the module docstring

    _Vector.numpy = numpy


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit one's complement sum of ``data`` (odd length padded with a zero byte).

    Long inputs (TSO super-frames of up to 64 KiB, whose checksums the switch completes) are summed
    by numpy as native-order words; RFC 1071 sums are byte-order independent, so one byte swap of the
    folded result gives the network-order sum. Short ones (and long ones before numpy is loaded) use
    ``scalar_ones_complement_sum``.
    """
    size = len(data)
    numpy = _Vector.numpy
    if size >= _VECTOR_MIN_BYTES and numpy is not None:
        words = numpy.frombuffer(data, dtype=numpy.uint16, count=size // 2)
        total = _fold(int(words.sum(dtype=numpy.uint64)))
        total = ((total & 0xFF) << 8) | (total >> 8)
        if size % 2:
            total += data[size - 1] << 8
        return _fold(total + initial)
    return scalar_ones_complement_sum(data, initial)


def scalar_ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """``ones_complement_sum`` by a single big-int reduction: summing the words of a big-endian integer
    modulo 0xFFFF equals their one's complement sum (2**16 is 1 modulo 0xFFFF)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = _fold((int.from_bytes(data, "big") % 0xFFFF) + initial)
    # The modulo maps an all-ones sum to 0; the two are the same number in one's complement.
    return 0xFFFF if total == 0 and (initial or any(data)) else total


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to store in a checksum field: the complement of the one's complement sum."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def checksum_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: the checksum after one 16-bit word changed from ``old_word`` to ``new_word``."""
    total = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
