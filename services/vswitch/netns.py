"""Network namespace, veth and link helpers for the vswitch (``ip`` from iproute2, every call bounded).

``run_in_netns`` runs a function on a short-lived thread that has entered a namespace: sockets and TAP
devices it creates belong to that namespace for good, and the caller's thread never moves.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from services.common.errors import FailedPrecondition, InvalidArgument

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
IP_TIMEOUT_SECONDS = 10.0


class NetnsError(FailedPrecondition):
    """An ``ip`` command or a namespace switch failed."""


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip [-n netns] args`` with a timeout; raise ``NetnsError`` with its stderr when it fails."""
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as error:
        raise NetnsError(f"{' '.join(argv)} timed out") from error
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create_netns(name: str) -> None:
    """Create a namespace with its loopback up (a no-op if it exists)."""
    if not netns_exists(name):
        ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Delete a namespace if it exists; its virtual interfaces (veth ends, TAPs) go with it."""
    if netns_exists(name):
        ip("netns", "del", name, check=False)


def link_exists(name: str, netns: str | None = None) -> bool:
    return ip("link", "show", "dev", name, netns=netns, check=False).returncode == 0


def create_veth(name_a: str, netns_a: str | None, name_b: str, netns_b: str | None) -> None:
    """A veth pair with one end in each namespace (``None``: the caller's)."""
    ip("link", "add", name_a, "type", "veth", "peer", "name", name_b)
    for name, netns in ((name_a, netns_a), (name_b, netns_b)):
        if netns:
            ip("link", "set", name, "netns", netns)


def configure_link(
    name: str,
    netns: str | None = None,
    *,
    addresses: Sequence[str] = (),
    mtu: int | None = None,
    mac: str = "",
    up: bool = True,
) -> None:
    """Set the MAC, add CIDR addresses, set the MTU and bring the link up."""
    if mac:
        ip("link", "set", "dev", name, "address", mac, netns=netns)
    for address in addresses:
        ip("addr", "replace", address, "dev", name, netns=netns)
    if mtu is not None:
        ip("link", "set", "dev", name, "mtu", str(mtu), netns=netns)
    if up:
        ip("link", "set", "dev", name, "up", netns=netns)


def move_link(name: str, to_netns: str, from_netns: str | None = None) -> None:
    ip("link", "set", "dev", name, "netns", to_netns, netns=from_netns)


def link_mtu(name: str, netns: str | None = None) -> int:
    output = ip("-o", "link", "show", "dev", name, netns=netns).stdout.split()
    try:
        return int(output[output.index("mtu") + 1])
    except (ValueError, IndexError) as error:
        raise NetnsError(f"no MTU in 'ip link show {name}'") from error


def exec_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def _enter(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NetnsError(f"setns({name}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def run_in_netns(name: str | None, function: Callable[[], T], timeout: float = IP_TIMEOUT_SECONDS) -> T:
    """Call ``function`` inside namespace ``name`` (directly when ``name`` is ``None``)."""
    if not name:
        return function()
    if not netns_exists(name):
        raise InvalidArgument(f"network namespace {name!r} does not exist")
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            _enter(name)
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread below
            outcome["error"] = error

    # The thread ends right after, so its namespace switch never leaks into other work.
    worker = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise NetnsError(f"call in namespace {name} did not finish within {timeout}s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
