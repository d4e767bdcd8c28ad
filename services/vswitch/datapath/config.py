"""The datapath's configuration, validated once when the datapath is built."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from services.vswitch.datapath.errors import DatapathConfigError
from services.vswitch.packets import NVGRE_OVERHEAD

# IPv4 minimum MTU (68) plus the NVGRE overhead; below it no inner packet fits.
MIN_PA_MTU = 68 + NVGRE_OVERHEAD
MAX_PA_MTU = 65535


@dataclass(frozen=True)
class DatapathConfig:
    """Where and how the datapath forwards.

    ``pa_mtu`` 0 reads the MTU of the interface holding ``pa_ip`` at start. ``netns`` is the namespace
    the raw socket and new TAPs are created in (``None``: the process's own). ``offload`` opens TAPs
    with a virtio-net header and checksum/TSO offload; ``complete_checksums`` then fills in the inner
    TCP/UDP checksums the VMs left partial before a frame goes on the wire (interoperable, and the
    receiver verifies them). Without it frames travel with partial checksums and the receiving switch
    hands them to its VMs as offloaded, as Linux does between namespaces over veth: faster, but both
    ends must run that way and nothing checks the inner checksum. With ``policy_ports`` every lookup record on
    this PA becomes a TAP port named ``nv<vsid><mac tail>``, moved into the namespace that
    ``port_netns_template`` names (``{vm_name}``, ``{vsid}``, ``{mac}``) when that namespace exists.
    ``state_path`` keeps the API-attached ports across restarts: a new datapath re-opens their TAPs.
    """

    pa_ip: str
    pa_mtu: int = 0
    netns: str | None = None
    offload: bool = True
    complete_checksums: bool = True
    policy_ports: bool = False
    port_netns_template: str = ""
    state_path: Path | None = None
    flow_cache_size: int = 65536
    socket_buffer_bytes: int = 8 * 1024 * 1024

    def validate(self) -> None:
        try:
            address = ipaddress.IPv4Address(self.pa_ip)
        except ValueError as error:
            raise DatapathConfigError(f"pa_ip must be an IPv4 address, got {self.pa_ip!r}") from error
        if address.is_unspecified or address.is_multicast:
            raise DatapathConfigError(f"pa_ip {self.pa_ip} cannot be a unicast source")
        if self.pa_mtu and not MIN_PA_MTU <= self.pa_mtu <= MAX_PA_MTU:
            raise DatapathConfigError(f"pa_mtu must be 0 (detect) or {MIN_PA_MTU}..{MAX_PA_MTU}")
        if self.flow_cache_size < 1:
            raise DatapathConfigError("flow_cache_size must be at least 1")
        if self.socket_buffer_bytes < 65536:
            raise DatapathConfigError("socket_buffer_bytes must be at least 65536")
        try:
            self.port_netns_template.format(vm_name="vm", vsid=4096, mac="02:00:00:00:00:01")
        except (KeyError, IndexError, ValueError) as error:
            raise DatapathConfigError(f"port_netns_template: {error}") from error
