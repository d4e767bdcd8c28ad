"""The two port backends of the datapath: how a VM port's device is opened, re-opened and released.

- ``PORT_BACKEND_TAP_FD``: the agent opens the TAP and owns its fd; the interface is the VM's NIC,
  moved into the VM's namespace (namespaces play VMs).
- ``PORT_BACKEND_TAP_KERNEL``: the agent creates a persistent TAP in its own namespace and attaches to
  the TAP's kernel side with an AF_PACKET socket bound to it, as Open vSwitch's userspace datapath
  attaches system and tap ports; the VM's hypervisor (qemu, ``-netdev tap,ifname=NAME``) is the TAP's
  one opener. A frame qemu writes into its fd is received by the TAP interface, where the socket reads
  it; a frame the agent sends on the socket is transmitted by the interface, that is queued to qemu.

Either way the port loop gets one non-blocking fd that reads and writes whole frames, each behind a
virtio-net header when the datapath runs with ``offload`` (the socket's ``PACKET_VNET_HDR`` gives
the TAP fd's ``IFF_VNET_HDR`` format), so forwarding, counters, extensions and capture do not tell
the backends apart. docs/vswitch.md ("Port backends") gives the reasons.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

from overland.v1 import vswitch_pb2
from services.vswitch import netns
from services.vswitch.datapath import tap
from services.vswitch.datapath.errors import PortError
from services.vswitch.packets import ETHERNET_HEADER_LEN

TAP_FD = vswitch_pb2.PORT_BACKEND_TAP_FD
TAP_KERNEL = vswitch_pb2.PORT_BACKEND_TAP_KERNEL

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
# A frame from the wire may be a 64 KiB super-frame; the VM side of a kernel port bursts too.
PACKET_BUFFER_BYTES = 4 * 1024 * 1024
# The largest frame handed to a TAP-fd port as it is: the kernel takes any length from a TAP fd.
UNLIMITED = 1 << 31
# An outer IPv4 datagram is at most 65535 bytes: the largest inner frame NVGRE can carry whole.
MAX_INNER_FRAME = 65535 - 28


@dataclass(frozen=True)
class OpenedPort:
    """A port's fd, and the longest frame it takes as one frame (longer TCP ones go as GSO)."""

    fd: int
    max_frame: int


def backend_of(port: vswitch_pb2.Port) -> vswitch_pb2.PortBackend:
    """The port's backend, UNSPECIFIED read as TAP_FD (the backend ports had before there was a choice)."""
    return port.backend or TAP_FD


def open_port(port: vswitch_pb2.Port, *, switch_netns: str | None, offload: bool, mtu: int) -> OpenedPort:
    """Open, or re-open after an agent restart, the device of ``port``; ``mtu`` is the inner MTU."""
    if backend_of(port) == TAP_KERNEL:
        if port.netns:
            raise PortError(f"port {port.name}: a TAP_KERNEL port stays in the agent's namespace (no netns)")
        return OpenedPort(
            open_kernel_port(port.name, switch_netns, offload=offload, mtu=mtu), ETHERNET_HEADER_LEN + mtu
        )
    return OpenedPort(_open_tap_fd(port, switch_netns, offload=offload, mtu=mtu), UNLIMITED)


def release_port(port: vswitch_pb2.Port, fd: int, switch_netns: str | None) -> None:
    """Delete the port's device (a detach). ``fd`` stays open: the caller closes it once the port loop
    no longer polls it."""
    if backend_of(port) == TAP_KERNEL:
        netns.ip("link", "del", "dev", port.name, netns=switch_netns, check=False)
        return
    tap.release_tap(os.dup(fd))


def _open_tap_fd(port: vswitch_pb2.Port, switch_netns: str | None, *, offload: bool, mtu: int) -> int:
    if port.netns and netns.link_exists(port.name, port.netns):
        # A restarted agent: the VM's TAP is already in its namespace; re-open it there.
        return netns.run_in_netns(port.netns, lambda: tap.open_tap(port.name, vnet_hdr=offload))
    fd = netns.run_in_netns(switch_netns, lambda: tap.open_tap(port.name, vnet_hdr=offload))
    try:
        # TSO super-frames plus the NVGRE overhead must fit one outer IPv4 datagram.
        netns.ip(
            "link", "set", "dev", port.name, "gso_max_size", str(MAX_INNER_FRAME - 64), netns=switch_netns
        )
        netns.configure_link(port.name, switch_netns, mtu=mtu, mac=port.mac, up=not port.netns)
        if port.netns:
            netns.move_link(port.name, port.netns, switch_netns)
            netns.configure_link(port.name, port.netns, mtu=mtu)
    except netns.NetnsError as error:
        tap.release_tap(fd)
        raise PortError(f"cannot set up TAP {port.name}: {error.message}") from error
    return fd


def open_kernel_port(name: str, switch_netns: str | None, *, offload: bool, mtu: int) -> int:
    """Create the persistent TAP ``name`` unless it exists (a restarted agent, a running VM: it is left
    as it is), set it up as a switch port, and return an AF_PACKET socket's fd bound to it."""
    existing = netns.ip("-d", "-o", "link", "show", "dev", name, netns=switch_netns, check=False)
    if existing.returncode == 0 and " tun type tap " not in existing.stdout:
        raise PortError(f"interface {name} exists and is not a TAP device")
    created = existing.returncode != 0
    if created:
        netns.run_in_netns(switch_netns, lambda: tap.create_tap(name))
    try:
        _quiet_port(name, switch_netns, mtu)
        return netns.run_in_netns(switch_netns, lambda: _packet_socket(name, vnet_hdr=offload))
    except (PortError, netns.NetnsError) as error:
        if created:
            netns.ip("link", "del", "dev", name, netns=switch_netns, check=False)
        raise PortError(f"cannot attach to TAP {name}: {error.message}") from error


def _quiet_port(name: str, switch_netns: str | None, mtu: int) -> None:
    """A switch port and nothing else: up with the inner MTU, and no part of the host's own stack.
    No address, no ARP (the host never answers the VM's ARP) and no IPv6 (no link-local address, no
    router or neighbour solicitations), so the only frames qemu gets are the switch's."""
    netns.ip("link", "set", "dev", name, "mtu", str(mtu), "arp", "off", "up", netns=switch_netns)

    def disable_ipv6() -> None:
        # /proc/sys/net is the calling thread's namespace's; a kernel without IPv6 has no such file.
        with (
            contextlib.suppress(FileNotFoundError),
            open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w", encoding="ascii") as setting,
        ):
            setting.write("1")

    netns.run_in_netns(switch_netns, disable_ipv6)


def _packet_socket(name: str, *, vnet_hdr: bool) -> int:
    """An AF_PACKET socket on the TAP's kernel side: every frame the interface receives (what qemu
    wrote), none it transmits (``PACKET_IGNORE_OUTGOING``: the agent's own sends, and anything the
    host might send there, are not read back), behind a virtio-net header with ``vnet_hdr``."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if vnet_hdr:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, PACKET_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, PACKET_BUFFER_BYTES)
        sock.bind((name, ETH_P_ALL))
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise PortError(f"cannot open a packet socket on {name}: {error.strerror}") from error
    return sock.detach()
