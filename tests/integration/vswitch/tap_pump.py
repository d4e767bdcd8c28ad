"""A stand-in for qemu on a TAP_KERNEL port, for tests that need a VM's frames but not a VM's boot.

qemu's NIC is the TAP's one opener: it reads the frames the switch sends from its fd and writes the
guest's into it. ``TapPump`` opens the TAP by name exactly so (``IFF_TAP | IFF_NO_PI``, with or
without ``IFF_VNET_HDR``, and the offloads a guest would accept set with ``TUNSETOFFLOAD``, as qemu
does) and copies frames between it and a second TAP that is the "guest's NIC" in a namespace, so a
real kernel stack (ping, TCP) sits behind the port. With ``offload`` both fds carry virtio-net headers
and the headers pass through unchanged, as with qemu's vhost-less virtio-net: TSO super-frames and
partial checksums cross in both directions. Without it every frame is plain (qemu's
``vnet_hdr=off``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import threading

from services.vswitch import netns
from services.vswitch.datapath import tap


def open_as_qemu(name: str, netns_name: str | None, *, offload: bool) -> int:
    """Open the existing TAP ``name`` the way qemu's ``-netdev tap,ifname=`` does; a blocking fd."""

    def open_it() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            flags = tap.IFF_TAP | tap.IFF_NO_PI | (tap.IFF_VNET_HDR if offload else 0)
            fcntl.ioctl(fd, tap.TUNSETIFF, struct.pack("16sH", name.encode(), flags))
            # qemu clears the offloads at open and sets what the guest's driver accepted.
            fcntl.ioctl(fd, tap.TUNSETOFFLOAD, tap.TUN_F_CSUM | tap.TUN_F_TSO4 if offload else 0)
        except OSError:
            os.close(fd)
            raise
        return fd

    return netns.run_in_netns(netns_name, open_it)


class TapPump:
    """Copies frames between the switch's TAP (opened as qemu would) and a guest NIC in ``guest_netns``."""

    def __init__(
        self, port: str, host_netns: str | None, guest_netns: str, guest_nic: str, mac: str, *, offload: bool
    ) -> None:
        self.port = port
        self.host_netns = host_netns
        self.offload = offload
        self.switch_side = open_as_qemu(port, host_netns, offload=offload)
        self.guest_side = netns.run_in_netns(guest_netns, lambda: tap.open_tap(guest_nic, vnet_hdr=offload))
        os.set_blocking(self.guest_side, True)
        netns.configure_link(guest_nic, guest_netns, mac=mac, mtu=1458)
        self.errors: list[OSError] = []
        self.frames = 0
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"pump-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        peers = {self.switch_side: self.guest_side, self.guest_side: self.switch_side}
        for fd in (*peers, self._stop_read):
            poller.register(fd, select.POLLIN)
        while True:
            for fd, events in poller.poll():
                if fd == self._stop_read:
                    return
                try:
                    if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        raise OSError(f"poll events {events:#x} on the {self._side(fd)} fd")
                    frame = os.read(fd, 65536 + 64)
                    os.write(peers[fd], frame)
                    self.frames += 1
                except OSError as error:
                    # The switch's TAP was deleted under qemu: it keeps a dead fd, and so does this.
                    self.errors.append(error)
                    poller.unregister(fd)

    def _side(self, fd: int) -> str:
        return "switch" if fd == self.switch_side else "guest"

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=5)
        for fd in (self.switch_side, self.guest_side, self._stop_read, self._stop_write):
            with contextlib.suppress(OSError):
                os.close(fd)
