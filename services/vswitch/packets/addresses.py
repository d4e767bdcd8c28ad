"""Conversions between text MAC/IPv4 addresses (as the table stores them) and wire bytes."""

from __future__ import annotations

import socket

from services.vswitch.packets.errors import EncodeError

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6


def mac_to_bytes(mac: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``) -> 6 bytes."""
    try:
        raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError as error:
        raise EncodeError(f"bad MAC {mac!r}") from error
    if len(raw) != 6:
        raise EncodeError(f"bad MAC {mac!r}")
    return raw


def mac_to_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ip_to_bytes(ip: str) -> bytes:
    try:
        return socket.inet_aton(ip) if ip.count(".") == 3 else _bad_ip(ip)
    except OSError as error:
        raise EncodeError(f"bad IPv4 address {ip!r}") from error


def _bad_ip(ip: str) -> bytes:
    raise EncodeError(f"bad IPv4 address {ip!r}")


def ip_to_str(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


def is_multicast_mac(raw: bytes) -> bool:
    """Broadcast is a multicast MAC too (the group bit of the first octet)."""
    return bool(raw[0] & 1)
