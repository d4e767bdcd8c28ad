"""Lab topologies in network namespaces: hosts on a provider network, VMs behind TAP ports.

Used by the integration tests, ``bench/throughput.py`` and demos. A ``Lab`` owns every namespace it
creates and deletes them all in ``close`` (also on errors): an underlay namespace with a bridge, one
namespace per host with its PA on a veth into the bridge, and one namespace per VM.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from overland.v1 import types_pb2
from services.common.table import StoreEntry, key_of, wrap
from services.vswitch import netns

PA_PREFIX_LENGTH = 24
_lab_ids = itertools.count()


def provider_entry(pa_ip: str, host_name: str) -> StoreEntry:
    return wrap(types_pb2.ProviderAddress(host_name=host_name, pa_ip=pa_ip, prefix_length=PA_PREFIX_LENGTH))


def domain_entry(rdid: str, tenant_name: str) -> StoreEntry:
    return wrap(types_pb2.RoutingDomain(rdid=rdid, tenant_name=tenant_name))


def subnet_entry(vsid: int, rdid: str, prefix: str, gateway_ip: str, gateway_mac: str) -> StoreEntry:
    return wrap(
        types_pb2.VirtualSubnet(
            vsid=vsid, rdid=rdid, ca_prefixes=[prefix], gateway_ip=gateway_ip, gateway_mac=gateway_mac
        )
    )


def record_entry(
    vsid: int,
    rdid: str,
    ca: str,
    mac: str,
    pa: str,
    *,
    vm_name: str = "",
    kind: int = types_pb2.LOOKUP_TYPE_STATIC,
) -> StoreEntry:
    return wrap(
        types_pb2.LookupRecord(
            vsid=vsid,
            rdid=rdid,
            ca=ca,
            mac=mac,
            pa=pa,
            vm_name=vm_name,
            rule=types_pb2.LOOKUP_RULE_ENCAP,
            type=kind,
        )
    )


def snapshot(entries: Sequence[StoreEntry]) -> dict[bytes, StoreEntry]:
    """Entries keyed as the store keys them, ready for ``RoutingTable.reset``."""
    return {key_of(entry): entry for entry in entries}


@dataclass
class Host:
    name: str
    netns: str
    pa_ip: str
    interface: str


@dataclass
class Vm:
    name: str
    netns: str
    host: Host


@dataclass
class Lab:
    """Namespaces of one lab; names carry a per-process prefix so parallel runs never collide."""

    prefix: str = field(default_factory=lambda: f"ol{os.getpid() % 100000}x{next(_lab_ids)}")
    pa_mtu: int = 1500
    hosts: dict[str, Host] = field(default_factory=dict)
    vms: dict[str, Vm] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)

    @property
    def underlay(self) -> str:
        return f"{self.prefix}-under"

    def _netns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        netns.create_netns(full)
        self._namespaces.append(full)
        return full

    def add_host(self, name: str, pa_ip: str) -> Host:
        """A host namespace whose PA sits on a veth into the underlay bridge."""
        if not self._namespaces:
            self._netns("under")
            netns.ip("link", "add", "br0", "type", "bridge", netns=self.underlay)
            netns.configure_link("br0", self.underlay, mtu=self.pa_mtu)
        host_ns = self._netns(name)
        index = len(self.hosts)
        # Interface names are per namespace; only the creation moment needs unique names.
        tag = f"{zlib.crc32(self.prefix.encode()) & 0xFFFFFF:06x}{index}"
        outer, inner = f"olu{tag}", f"olp{tag}"
        netns.create_veth(outer, self.underlay, inner, host_ns)
        netns.ip("link", "set", "dev", outer, "master", "br0", netns=self.underlay)
        netns.configure_link(outer, self.underlay, mtu=self.pa_mtu)
        netns.ip("link", "set", "dev", inner, "name", "pa0", netns=host_ns)
        netns.configure_link("pa0", host_ns, addresses=[f"{pa_ip}/{PA_PREFIX_LENGTH}"], mtu=self.pa_mtu)
        host = Host(name, host_ns, pa_ip, "pa0")
        self.hosts[name] = host
        return host

    def add_vm(self, name: str, host: Host) -> Vm:
        """An empty VM namespace; the datapath moves the VM's TAP port into it."""
        vm = Vm(name, self._netns(name), host)
        self.vms[name] = vm
        return vm

    def configure_vm(self, vm: Vm, port: str, ca_cidr: str, gateway_ip: str = "") -> None:
        """Address the VM's NIC and route everything else through the subnet's gateway."""
        netns.configure_link(port, vm.netns, addresses=[ca_cidr])
        if gateway_ip:
            netns.ip("route", "replace", "default", "via", gateway_ip, "dev", port, netns=vm.netns)

    def run(self, where: str, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace, bounded by ``timeout``."""
        return subprocess.run(
            netns.exec_argv(where, argv), capture_output=True, text=True, timeout=timeout, check=False
        )

    def ping(self, vm: Vm, destination: str, count: int = 1, wait: float = 1.0) -> bool:
        result = self.run(
            vm.netns,
            ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), "-i", "0.2", destination],
            timeout=count * (wait + 0.5) + 5,
        )
        return result.returncode == 0

    def close(self) -> None:
        for name in reversed(self._namespaces):
            netns.delete_netns(name)
        self._namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
