"""TAP devices via /dev/net/tun: open (or re-open) a persistent TAP with a virtio-net header and offloads.

With ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (checksum + TSO4) the VM's kernel hands the switch TCP
super-frames of up to 64 KiB with a partial checksum instead of MTU-sized segments, so the Python
per-packet cost is paid once per super-frame. The TAP is persistent so that a restarted agent finds
the VM's interface (addresses, routes) as it was and re-opens it: the datapath is never flushed.
"""

from __future__ import annotations

import fcntl
import os
import struct

from services.vswitch.datapath.errors import PortError

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
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


def open_tap(name: str, *, vnet_hdr: bool) -> int:
    """Create or re-open the TAP ``name`` in the calling thread's network namespace; a non-blocking fd."""
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name:
        raise PortError(f"bad TAP name {name!r}: 1..15 bytes, no '/'")
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
