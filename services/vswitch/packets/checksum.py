"""The Internet checksum (RFC 1071) and its incremental update (RFC 1624)."""

from __future__ import annotations


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit one's complement sum of ``data`` (odd length padded with a zero byte).

    Summing the 16-bit words of a big-endian integer modulo 0xFFFF equals their one's complement
    sum (2**16 is 1 modulo 0xFFFF), so one C-level big-int reduction replaces a Python loop; that
    keeps software checksums of 64 KiB TSO frames cheap.
    """
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = (int.from_bytes(data, "big") % 0xFFFF) + initial
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    # The modulo maps an all-ones sum to 0; the two are the same number in one's complement.
    return 0xFFFF if total == 0 and (initial or any(data)) else total


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to store in a checksum field: the complement of the one's complement sum."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def checksum_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: the checksum after one 16-bit word changed from ``old_word`` to ``new_word``."""
    total = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
