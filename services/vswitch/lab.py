"""Lab topologies in network namespaces: hosts on a provider network, VMs behind TAP ports.

Used by the integration tests, ``bench/throughput.py`` and demos. A ``Lab`` owns every namespace it
creates and deletes them all in ``close`` (also on errors): an underlay namespace with a bridge, one
namespace per host with its PA on a veth into the bridge, and one namespace per VM.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from overland.v1 import types_pb2, vswitch_pb2
from services.common.schema import StoreEntry, key_of, wrap
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
    kind: types_pb2.LookupType = types_pb2.LOOKUP_TYPE_STATIC,
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


class TcpRelay:
    """Forwards TCP connections accepted on 127.0.0.1:``listen_port`` in ``listen_netns`` to
    ``target_host:target_port`` as seen from ``target_netns`` (``None``: the caller's namespace).

    Lets processes inside host namespaces reach an etcd on the test's loopback, and the test reach an
    agent's gRPC port inside a host namespace, without routing between namespaces.
    """

    def __init__(
        self,
        listen_netns: str | None,
        listen_port: int,
        target_netns: str | None,
        target: tuple[str, int],
    ):
        self._target_netns = target_netns
        self._target = target
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = netns.run_in_netns(listen_netns, lambda: _listen(listen_port))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-relay", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = netns.run_in_netns(
                    self._target_netns, lambda: socket.create_connection(self._target, timeout=5)
                )
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
        self._thread.join(timeout=5)


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    listener.settimeout(0.2)
    return listener


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction until either side closes; then close both so the peer pump ends too."""
    source.settimeout(None)
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass  # the other direction or close() shut the sockets: the connection is over either way
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


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


# ----- the demo tenancy: two tenants on the same CA space, one with a second subnet -----

BLUE, RED = "rd-blue", "rd-red"
BLUE_A, BLUE_B, RED_A = 5001, 5002, 6001
DEMO_SUBNETS = (
    # vsid, rdid, prefix, gateway IP, gateway MAC
    (BLUE_A, BLUE, "192.0.2.0/24", "192.0.2.1", "02:4f:4c:00:13:89"),
    (BLUE_B, BLUE, "198.51.100.0/24", "198.51.100.1", "02:4f:4c:00:13:8a"),
    (RED_A, RED, "192.0.2.0/24", "192.0.2.1", "02:4f:4c:00:17:71"),
)


@dataclass(frozen=True)
class VmSpec:
    """A demo VM: where it runs (PA), its subnet, CA and MAC."""

    name: str
    pa: str
    vsid: int
    rdid: str
    ca: str
    mac: str
    gateway: str

    @property
    def cidr(self) -> str:
        return f"{self.ca}/24"


def demo_vms(pas: Sequence[str]) -> dict[str, VmSpec]:
    """blue1/blue2 in blue's first subnet on different hosts, blue3 in blue's second subnet, and red
    VMs reusing blue's addresses: red1 (.12, like blue2) beside blue1, red2 (.11, like blue1) elsewhere."""
    last = pas[-1]
    layout = (
        ("blue1", pas[0], BLUE_A, "192.0.2.11", "02:00:00:00:0b:01"),
        ("blue2", pas[1], BLUE_A, "192.0.2.12", "02:00:00:00:0b:02"),
        ("blue3", last, BLUE_B, "198.51.100.13", "02:00:00:00:0b:03"),
        ("red1", pas[0], RED_A, "192.0.2.12", "02:00:00:00:0c:01"),
        ("red2", last, RED_A, "192.0.2.11", "02:00:00:00:0c:02"),
    )
    subnets = {vsid: (rdid, gateway) for vsid, rdid, _prefix, gateway, _mac in DEMO_SUBNETS}
    return {
        name: VmSpec(name, pa, vsid, subnets[vsid][0], ca, mac, subnets[vsid][1])
        for name, pa, vsid, ca, mac in layout
    }


def demo_entries(pas: Sequence[str], vms: Sequence[VmSpec]) -> list[StoreEntry]:
    """The table of the demo: providers, both domains, the three subnets and a record per VM."""
    entries = [provider_entry(pa, f"host{index + 1}") for index, pa in enumerate(pas)]
    entries += [domain_entry(BLUE, "blue"), domain_entry(RED, "red")]
    entries += [subnet_entry(*subnet) for subnet in DEMO_SUBNETS]
    entries += [record_entry(vm.vsid, vm.rdid, vm.ca, vm.mac, vm.pa, vm_name=vm.name) for vm in vms]
    return entries


# The DumpTableResponse field that holds each kind of StoreEntry resource.
_DUMP_FIELDS = {
    "provider_address": "provider_addresses",
    "routing_domain": "routing_domains",
    "virtual_subnet": "virtual_subnets",
    "lookup_record": "lookup_records",
    "customer_route": "customer_routes",
}


def dump_of(entries: Sequence[StoreEntry], revision: int = 1) -> vswitch_pb2.DumpTableResponse:
    """Entries as a ``DumpTableResponse``, the table file ``python -m services.vswitch.datapath`` reads."""
    dump = vswitch_pb2.DumpTableResponse(applied_revision=revision)
    for entry in entries:
        kind = entry.WhichOneof("resource")
        if kind in _DUMP_FIELDS:
            getattr(dump, _DUMP_FIELDS[kind]).append(getattr(entry, kind))
    return dump
