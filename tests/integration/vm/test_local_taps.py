"""A site without a vswitch agent gives each NIC a plain persistent TAP in qemu's namespace: made once
(a VM's every start ensures it), up, still there with nobody holding it, and removed with the VM."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from services.replica.vm import LocalTaps, PortRequest
from services.vswitch import netns

pytestmark = pytest.mark.netns


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"ovl-taps-{os.getpid()}"
    netns.create_netns(name)
    try:
        yield name
    finally:
        netns.delete_netns(name)


def test_a_tap_is_made_once_persists_and_goes(namespace: str) -> None:
    taps = LocalTaps(namespace)
    port = PortRequest("ovl01234567n0", "52:54:00:0b:00:0a", 5001, "web1")
    taps.ensure(port)
    taps.ensure(port)
    shown = netns.ip("-d", "link", "show", "dev", port.name, netns=namespace).stdout
    # A TAP nobody has opened yet: persistent (it outlives its openers), administratively up.
    assert "tun type tap" in shown
    assert "persist on" in shown
    assert "UP" in shown.split(">")[0]
    assert not netns.link_exists(port.name)
    taps.remove(port.name)
    taps.remove(port.name)
    assert not netns.link_exists(port.name, namespace)
