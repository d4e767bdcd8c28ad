"""TAP devices via /dev/net/tun, and the virtio-net headers frames carry on them.

With ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (checksum + TSO4) the VM's kernel hands the switch TCP
super-frames of up to 64 KiB with a partial checksum instead of MTU-sized segments, so the Python
per-packet cost is paid once per super-frame. The TAP is persistent so that a restarted agent finds
the VM's interface (addresses, routes) as it was and re-opens it: the datapath is never flushed.
``create_tap`` makes a persistent TAP that the agent does not open (a kernel port's, which qemu
opens), and ``gso_vnet_header`` the header that has the kernel cut a TCP super-frame into segments.
"""

from __future__ import annotations

import fcntl
import os
import struct

from services.vswitch.datapath.errors import PortError
from services.vswitch.packets import ones_complement_sum

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
IFNAMSIZ = 16

VNET_HDR_LEN = 10
VNET_HDR = struct.Struct("<BBHHHH")
VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_GSO_ECN = 0x80
_TCP_CWR = 0x80
# A frame handed to the kernel whose checksum the switch already completed or verified.
PLAIN_VNET_HDR = VNET_HDR.pack(0, VNET_GSO_NONE, 0, 0, 0, 0)
# TCP/UDP in IPv4 without options whose checksum the sender left partial: the kernel completes it
# if the frame leaves again and trusts it if it is delivered locally, as veth does between namespaces.
_PARTIAL_TCP = VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, 34, 16)
_PARTIAL_UDP = VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, 34, 6)


def partial_vnet_header(frame: bytes | bytearray | memoryview) -> bytes:
    """The virtio-net header for delivering ``frame`` whose TCP/UDP checksum may be partial."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[14] != 0x45 or frame[20] & 0x3F or frame[21]:
        return PLAIN_VNET_HDR
    protocol = frame[23]
    if protocol == 6:
        return _PARTIAL_TCP
    return _PARTIAL_UDP if protocol == 17 else PLAIN_VNET_HDR


def gso_vnet_header(frame: bytes | bytearray | memoryview, mtu: int) -> tuple[bytes, bytearray] | None:
    """For a TCP/IPv4 frame whose IP packet is longer than ``mtu``: the virtio-net header that has the
    kernel cut it into segments of at most ``mtu`` (TCPv4 GSO, segment size ``mtu`` minus the IP and
    TCP headers), and a copy of the frame whose TCP checksum field holds the pseudo-header sum, as a
    CHECKSUM_PARTIAL packet does (each segment's checksum is completed from it). ``None`` for any
    other frame: not IPv4, not TCP, an IP fragment, or headers that do not fit what it says.
    """
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4 or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = frame[16] << 8 | frame[17]
    # More fragments, or an offset: a fragment is not a segment the kernel can cut.
    if ihl < 20 or (frame[20] & 0x3F) or frame[21] or total > len(frame) - 14:
        return None
    tcp_at = 14 + ihl
    if tcp_at + 20 > 14 + total:
        return None
    data_offset = (frame[tcp_at + 12] >> 4) * 4
    headers = tcp_at + data_offset
    segment = mtu - ihl - data_offset
    if data_offset < 20 or headers > 14 + total or segment < 1 or total <= mtu:
        return None
    copy = bytearray(frame[: 14 + total])
    tcp_length = total - ihl
    pseudo = ones_complement_sum(bytes(copy[26:34]) + bytes((0, 6, tcp_length >> 8, tcp_length & 0xFF)))
    copy[tcp_at + 16] = pseudo >> 8
    copy[tcp_at + 17] = pseudo & 0xFF
    gso = VNET_GSO_TCPV4 | (VNET_GSO_ECN if copy[tcp_at + 13] & _TCP_CWR else 0)
    return VNET_HDR.pack(VNET_F_NEEDS_CSUM, gso, headers, segment, tcp_at, 16), copy


def _check_name(name: str) -> None:
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name:
        raise PortError(f"bad TAP name {name!r}: 1..15 bytes, no '/'")


def create_tap(name: str) -> None:
    """Create the persistent TAP ``name`` in the calling thread's namespace, owned by root, without
    keeping it open: its one opener is the VM's hypervisor. Fails (EBUSY) if another process holds
    a TAP of that name open."""
    _check_name(name)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        # Only root (or CAP_NET_ADMIN) may open it, whoever runs the VM.
        fcntl.ioctl(fd, TUNSETOWNER, 0)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as error:
        raise PortError(f"cannot create TAP {name}: {error.strerror}") from error
    finally:
        os.close(fd)


def open_tap(name: str, *, vnet_hdr: bool) -> int:
    """Create or re-open the TAP ``name`` in the calling thread's network namespace; a non-blocking fd."""
    _check_name(name)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        if vnet_hdr:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as error:
        os.close(fd)
        raise PortError(f"cannot open TAP {name}: {error.strerror}") from error
    return fd


def release_tap(fd: int) -> None:
    """Make the TAP non-persistent and close it: the kernel deletes the interface."""
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    finally:
        os.close(fd)
