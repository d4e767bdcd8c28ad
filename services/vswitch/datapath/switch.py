"""``NvgreSwitch``, the datapath shell: VM ports, the raw GRE socket, two forwarding threads, flow
caches and counters.

Decisions come from the pure ``forwarding`` module; this file only moves bytes. The packet path is a
flow cache hit: a dict lookup on the frame's MAC header and IP addresses (and the outer PA and VSID
for received frames), then one ``sendmsg`` with a precomputed GRE header, or one ``writev`` to a TAP.
A miss takes the table lock, asks ``forwarding`` and caches the answer when it holds for the whole
flow. ``apply`` clears the caches after every table change, so a PA update takes effect on the next
frame.

Threads: one polls every port (VM -> switch), one polls the raw socket (wire -> VMs). Each has its
own ``Stats``; ``counters()`` sums them. A port is one fd whatever its backend (ports.py): a TAP the
agent opened, or a packet socket on the kernel side of a TAP that qemu opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError as DecodeMessageError

from overland.v1 import vswitch_pb2
from services.common.schema import KIND_PA, KIND_RECORD, KIND_SUBNET
from services.common.table import RoutingTable, TableDelta
from services.vswitch import netns
from services.vswitch.datapath import ports, tap
from services.vswitch.datapath.config import DatapathConfig
from services.vswitch.datapath.counters import Stats, total
from services.vswitch.datapath.errors import DatapathError, PortError, PortNotFound, TableChangingError
from services.vswitch.datapath.extensions import ExtensionChain, Hook, HookResult, Verdict, run_hooks
from services.vswitch.datapath.forwarding import (
    Action,
    ActionKind,
    Context,
    PortInfo,
    ReplyKind,
    apply_rewrite,
    decide_from_port,
    decide_from_wire,
    port_info,
)
from services.vswitch.packets import (
    ETHERNET_HEADER_LEN,
    FLOW_ADDRESSES_AT,
    FLOW_ADDRESSES_END,
    FLOW_ETHERTYPE_AT,
    FLOW_MAC_END,
    FLOW_PORTS_END,
    FLOW_TTL_AT,
    FLOW_VSID_AT,
    FLOW_VSID_END,
    NVGRE_OVERHEAD,
    DecodeError,
    DropReason,
    EncodeError,
    enable_vector_sums,
    flow_id,
    gre_header,
    mac_to_bytes,
    mac_to_str,
    ones_complement_sum,
    parse_nvgre,
)

if TYPE_CHECKING:
    from services.vswitch.config import AgentConfig

log = logging.getLogger(__name__)

# Where agents keep their API-attached port lists across restarts (tmpfs: gone after a reboot, as the
# persistent TAPs are).
STATE_DIR = "/run/overland/vswitch"
IPPROTO_GRE = 47
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
POLL_MS = 250
# Frames drained from one fd before the loop looks at the others (fairness between ports).
BATCH = 64
BUFFER_BYTES = 65536 + tap.VNET_HDR_LEN + 64
MAX_INNER_FRAME = ports.MAX_INNER_FRAME
_CHECKSUM = struct.Struct("!H")
_IPV4 = b"\x08\x00"

# Flow cache entries: (ENCAP, PA, GRE header, rewrite) or (DELIVER, port name, b"", rewrite).
ENCAP = 0
DELIVER = 1
CacheEntry = tuple[int, str, bytes, bytes]


@dataclass
class _Port:
    info: PortInfo
    fd: int
    message: vswitch_pb2.Port
    # Longer frames are cut into segments by the kernel (kernel ports: the TAP's MTU applies).
    max_frame: int = ports.UNLIMITED
    cache: dict[bytes, CacheEntry] = field(default_factory=dict)


def policy_port_name(vsid: int, mac: str) -> str:
    """A stable TAP name for a policy port: the same after an agent restart, at most 15 bytes."""
    return f"nv{vsid:06x}{mac.replace(':', '')[-6:]}"


class NvgreSwitch:
    """The NVGRE switch of one host (the agent's ``Datapath``); see the module docstring."""

    def __init__(self, config: DatapathConfig):
        config.validate()
        self.config = config
        self.pa_mtu = config.pa_mtu
        self._partial = config.offload and not config.complete_checksums
        # The agent mutates the table; hold this lock around table updates and ``apply``.
        self.table_lock = threading.RLock()
        self._table = RoutingTable()
        self._ports: dict[str, _Port] = {}
        self._fds: dict[int, _Port] = {}
        self._by_mac: dict[tuple[int, bytes], PortInfo] = {}
        self._to_close: list[int] = []
        self._ports_version = 0
        self._wire_cache: dict[bytes, CacheEntry] = {}
        self._chain = ExtensionChain()
        self._port_stats = Stats()
        self._wire_stats = Stats()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._wake_ports = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_wire = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._threads: list[threading.Thread] = []
        self._context = Context(self._table, config.pa_ip, self.pa_mtu or 1500, self._by_mac)

    @classmethod
    def from_agent_config(cls, config: AgentConfig) -> NvgreSwitch:
        """The datapath of an agent process running inside its host's namespace."""
        state = Path(STATE_DIR) / f"{config.host_name}-{config.pa_ip}.ports"
        return cls(DatapathConfig(pa_ip=config.pa_ip, pa_mtu=config.pa_mtu, state_path=state))

    # ----- lifecycle -----

    def start(self) -> None:
        """Open the raw GRE socket on the PA and start forwarding."""
        if self._threads:
            raise DatapathError("datapath already started")
        if not self.pa_mtu:
            self.pa_mtu = self._detect_pa_mtu()
        self._sock = netns.run_in_netns(self.config.netns, self._open_socket)
        with self.table_lock:
            self._rebuild_context()
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._port_loop, name="vswitch-ports", daemon=True),
            threading.Thread(target=self._wire_loop, name="vswitch-wire", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._restore_ports()
        log.info("datapath started", extra={"pa": self.config.pa_ip, "pa_mtu": self.pa_mtu})
        # Checksums of long frames speed up once numpy is loaded; loading it after forwarding started
        # keeps it off a restart's outage (a frame meanwhile takes the slower exact path).
        threading.Thread(target=enable_vector_sums, name="vswitch-numpy", daemon=True).start()

    def stop(self) -> None:
        """Stop forwarding and close the fds. TAPs stay (persistent) for the next start to re-open."""
        self._stop.set()
        for _, write_end in (self._wake_ports, self._wake_wire):
            os.write(write_end, b"x")
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        with self.table_lock:
            for port in self._ports.values():
                os.close(port.fd)
            self._ports.clear()
            self._fds.clear()
            self._by_mac.clear()
            self._close_pending()
        self._chain.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for pipe in (self._wake_ports, self._wake_wire):
            for end in pipe:
                os.close(end)
        self._wake_ports = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_wire = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        log.info("datapath stopped", extra={"pa": self.config.pa_ip})

    @property
    def running(self) -> bool:
        return bool(self._threads)

    @property
    def inner_mtu(self) -> int:
        return (self.pa_mtu or 1500) - NVGRE_OVERHEAD

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
        try:
            sock.bind((self.config.pa_ip, 0))
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.config.socket_buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, self.config.socket_buffer_bytes)
            # Inner packets without DF may be larger than the PA MTU: the kernel fragments the outer one.
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            raise DatapathError(f"cannot open the GRE socket on {self.config.pa_ip}: {error}") from error
        return sock

    def _detect_pa_mtu(self) -> int:
        for line in netns.ip("-o", "-4", "addr", "show", netns=self.config.netns).stdout.splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3].split("/")[0] == self.config.pa_ip:
                return netns.link_mtu(fields[1], self.config.netns)
        raise DatapathError(f"no interface holds the PA {self.config.pa_ip}")

    # ----- table -----

    def apply(self, table: RoutingTable, delta: TableDelta) -> None:
        """Take a table change: refresh ports (policy ports too) and drop every cached decision."""
        with self.table_lock:
            self._table = table
            if self.config.policy_ports and (delta.reset or KIND_RECORD in delta.kinds()):
                self._reconcile_policy_ports()
            if delta.reset or delta.kinds() & {KIND_RECORD, KIND_SUBNET, KIND_PA}:
                for port in self._ports.values():
                    port.info = port_info(
                        table, port.info.name, port.info.vsid, port.info.mac, self.config.pa_ip
                    )
                    if port.info.known:
                        port.message.ca = self._record_ca(port.info)
            self._rebuild_context()

    def _record_ca(self, info: PortInfo) -> str:
        record = self._table.record_by_mac(info.vsid, mac_to_str(info.mac))
        return record.ca if record is not None else ""

    def _reconcile_policy_ports(self) -> None:
        wanted = {}
        for record in self._table.records_on_pa(self.config.pa_ip):
            name = policy_port_name(record.vsid, record.mac)
            wanted[name] = vswitch_pb2.Port(
                name=name,
                mac=record.mac,
                vsid=record.vsid,
                vm_name=record.vm_name,
                netns=self.config.port_netns_template.format(
                    vm_name=record.vm_name, vsid=record.vsid, mac=record.mac
                ),
                from_policy=True,
            )
        for name, port in list(self._ports.items()):
            if port.message.from_policy and name not in wanted:
                self.detach_port(name)
        for name, message in wanted.items():
            if name not in self._ports:
                if message.netns and not netns.netns_exists(message.netns):
                    message.netns = ""
                try:
                    self.attach_port(message)
                except PortError:
                    log.exception("policy port not attached", extra={"port": name})

    def _rebuild_context(self) -> None:
        """New decisions see the new table, ports and MTU; cached ones are gone."""
        self._by_mac = {(p.info.vsid, p.info.mac): p.info for p in self._ports.values()}
        self._context = Context(self._table, self.config.pa_ip, self.pa_mtu or 1500, self._by_mac)
        self._wire_cache = {}
        for port in self._ports.values():
            port.cache = {}

    # ----- ports -----

    def attach_port(self, port: vswitch_pb2.Port) -> vswitch_pb2.Port:
        """Open (or re-open) the device of a VM NIC's port (see ports.py for the backends)."""
        try:
            mac = mac_to_bytes(port.mac)
        except EncodeError as error:
            raise PortError(str(error)) from error
        with self.table_lock:
            if port.name in self._ports:
                raise PortError(f"port {port.name} is already attached")
            if any(p.info.vsid == port.vsid and p.info.mac == mac for p in self._ports.values()):
                raise PortError(f"another port already carries VSID {port.vsid} MAC {port.mac}")
            # A port may come before its record (a VM migrating here): it forwards once the record does.
            info = port_info(self._table, port.name, port.vsid, mac, self.config.pa_ip)
            opened = ports.open_port(
                port, switch_netns=self.config.netns, offload=self.config.offload, mtu=self.inner_mtu
            )
            message = vswitch_pb2.Port()
            message.CopyFrom(port)
            message.mac = mac_to_str(mac)
            message.ca = self._record_ca(info) if info.known else ""
            message.backend = ports.backend_of(port)
            message.mtu = self.inner_mtu
            entry = _Port(info, opened.fd, message, opened.max_frame)
            fd = opened.fd
            self._ports[port.name] = entry
            self._fds[fd] = entry
            self._ports_version += 1
            self._rebuild_context()
            self._save_ports()
        self._wake(self._wake_ports)
        return message

    def detach_port(self, name: str) -> None:
        """Remove a port; its TAP is deleted (qemu, if it still holds a kernel port's, loses it)."""
        with self.table_lock:
            port = self._ports.pop(name, None)
            if port is None:
                raise PortNotFound(f"no port named {name}")
            self._fds.pop(port.fd, None)
            try:
                ports.release_port(port.message, port.fd, self.config.netns)
            except (OSError, netns.NetnsError):
                log.warning("TAP %s was already gone", name)
            self._to_close.append(port.fd)
            self._ports_version += 1
            self._rebuild_context()
            self._save_ports()
            if not self.running:
                self._close_pending()
        self._wake(self._wake_ports)

    def _save_ports(self) -> None:
        """Remember the API ports, so that a restarted agent re-opens them instead of losing the VMs."""
        path = self.config.state_path
        if path is None or self._stop.is_set():
            return
        saved = vswitch_pb2.ListPortsResponse(
            ports=[p.message for p in self._ports.values() if not p.message.from_policy]
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_bytes(saved.SerializeToString())
            temporary.replace(path)
        except OSError as error:
            raise DatapathError(f"cannot save the port list to {path}: {error.strerror}") from error

    def _restore_ports(self) -> None:
        """Re-attach the ports a previous run saved whose TAP still exists; forget the others."""
        path = self.config.state_path
        if path is None or not path.exists():
            return
        try:
            saved = vswitch_pb2.ListPortsResponse.FromString(path.read_bytes())
        except (OSError, DecodeMessageError):
            log.warning("unreadable port list %s: starting without it", path)
            return
        for port in saved.ports:
            if port.netns and not netns.netns_exists(port.netns):
                continue
            if not netns.link_exists(port.name, port.netns or self.config.netns):
                continue
            try:
                self.attach_port(port)
            except PortError:
                log.exception("saved port not re-attached", extra={"port": port.name})
        with self.table_lock:
            self._save_ports()

    def ports(self) -> list[vswitch_pb2.Port]:
        with self.table_lock:
            return [p.message for p in sorted(self._ports.values(), key=lambda p: p.message.name)]

    def _close_pending(self) -> None:
        for fd in self._to_close:
            os.close(fd)
        self._to_close = []

    # ----- extensions and counters -----

    def extensions(self) -> list[vswitch_pb2.Extension]:
        return self._chain.configs()

    def configure_extension(self, extension: vswitch_pb2.Extension) -> vswitch_pb2.Extension:
        return self._chain.configure(extension)

    def counters(self) -> vswitch_pb2.Counters:
        return total((self._port_stats, self._wire_stats))

    # ----- the packet path: VM -> switch -----

    def _port_loop(self) -> None:
        stats = self._port_stats
        buffer = bytearray(BUFFER_BYTES)
        view = memoryview(buffer)
        wake = self._wake_ports[0]
        poller = select.poll()
        seen_version = -1
        fds: dict[int, _Port] = {}
        while not self._stop.is_set():
            if seen_version != self._ports_version:
                with self.table_lock:
                    seen_version = self._ports_version
                    fds = dict(self._fds)
                    self._close_pending()
                poller = select.poll()
                poller.register(wake, select.POLLIN)
                for fd in fds:
                    poller.register(fd, select.POLLIN)
            for fd, _events in poller.poll(POLL_MS):
                if fd == wake:
                    _drain(wake)
                    continue
                port = fds.get(fd)
                if port is None or port.fd not in self._fds:
                    continue
                for _ in range(BATCH):
                    try:
                        length = os.readv(fd, [buffer])
                    except OSError:
                        break
                    self._from_port(port, buffer, view, length, stats)

    def _from_port(self, port: _Port, buffer: bytearray, view: memoryview, length: int, stats: Stats) -> None:
        offset = 0
        segment = 0
        if self.config.offload:
            offset = tap.VNET_HDR_LEN
            flags, gso_type, headers, gso_size, csum_start, csum_offset = tap.VNET_HDR.unpack_from(buffer)
            if gso_type != tap.VNET_GSO_NONE:
                segment = headers - ETHERNET_HEADER_LEN + gso_size
            if (
                flags & tap.VNET_F_NEEDS_CSUM
                and self.config.complete_checksums
                and not _complete_checksum(
                    buffer, offset + csum_start, offset + csum_offset + csum_start, length
                )
            ):
                stats.drop(DropReason.TRUNCATED)
                return
        size = length - offset
        stats.rx_packets += 1
        stats.rx_bytes += size
        frame = view[offset:length]
        if self._chain.ingress:
            verdict = run_hooks(self._chain.ingress, Hook.INGRESS, port.info.name, frame)
            if verdict.verdict is not Verdict.CONTINUE:
                self._extension_verdict(verdict, frame, stats)
                return
        if buffer[offset + FLOW_ETHERTYPE_AT : offset + FLOW_MAC_END] == _IPV4 and size >= FLOW_ADDRESSES_END:
            key = (
                view[offset : offset + FLOW_MAC_END].tobytes()
                + view[offset + FLOW_ADDRESSES_AT : offset + FLOW_PORTS_END].tobytes()
            )
            entry = port.cache.get(key)
            ip_size = segment or size - ETHERNET_HEADER_LEN
            if (
                entry is not None
                and ip_size <= self._context.inner_mtu
                and size <= MAX_INNER_FRAME
                and (not entry[3] or buffer[offset + FLOW_TTL_AT] > 1)
            ):
                self._send(entry, frame, stats)
                return
            self._slow_from_port(port, frame.tobytes(), segment or None, key, stats)
            return
        self._slow_from_port(port, frame.tobytes(), None, b"", stats)

    def _slow_from_port(
        self, port: _Port, frame: bytes, segment: int | None, key: bytes, stats: Stats
    ) -> None:
        with self.table_lock:
            try:
                action = decide_from_port(self._context, port.info, frame, segment)
            except TableChangingError:
                # An update made without table_lock (the agent's updates hold it).
                stats.drop(DropReason.TABLE_CHANGING)
                return
            entry = self._cache_entry(action)
            if entry is not None and key:
                _remember(port.cache, key, entry, self.config.flow_cache_size)
        if action.kind is ActionKind.ENCAPSULATE and len(frame) > MAX_INNER_FRAME:
            stats.drop(DropReason.TOO_BIG)
            return
        self._execute(action, port, entry, stats)

    @staticmethod
    def _cache_entry(action: Action) -> CacheEntry | None:
        if action.kind is ActionKind.ENCAPSULATE:
            return (ENCAP, action.pa, gre_header(action.vsid, flow_id(action.frame)), action.rewrite)
        if action.kind is ActionKind.DELIVER and action.cacheable:
            return (DELIVER, action.port, b"", action.rewrite)
        return None

    def _execute(self, action: Action, port: _Port, entry: CacheEntry | None, stats: Stats) -> None:
        if action.kind is ActionKind.DROP:
            stats.drop(action.reason or DropReason.UNKNOWN_DESTINATION)
        elif action.kind is ActionKind.REPLY:
            if action.reply is ReplyKind.ARP:
                stats.arp_replies += 1
            elif action.reply is ReplyKind.FRAG_NEEDED:
                stats.icmp_frag_needed += 1
            self._write_port(port.info.name, action.frame, stats)
        elif action.kind is ActionKind.ENCAPSULATE and entry is not None:
            # The entry rewrites the original frame; action.frame already holds the rewritten one.
            self._send_wire(entry[1], entry[2], action.frame, stats)
        elif action.kind is ActionKind.DELIVER:
            self._deliver(action.port, action.frame, stats)

    def _send(self, entry: CacheEntry, frame: memoryview, stats: Stats) -> None:
        payload: bytes | memoryview = apply_rewrite(frame, entry[3]) if entry[3] else frame
        if entry[0] == ENCAP:
            self._send_wire(entry[1], entry[2], payload, stats)
        else:
            self._deliver(entry[1], payload, stats)

    def _send_wire(self, pa: str, header: bytes, frame: bytes | memoryview, stats: Stats) -> None:
        sock = self._sock
        if sock is None:
            stats.drop(DropReason.SEND_FAILED)
            return
        try:
            sock.sendmsg([header, frame], (), 0, (pa, 0))
        except OSError:
            stats.drop(DropReason.SEND_FAILED)
            return
        stats.tx_packets += 1
        stats.tx_bytes += len(frame)

    def _deliver(self, name: str, frame: bytes | memoryview, stats: Stats) -> None:
        if self._chain.delivery:
            verdict = run_hooks(self._chain.delivery, Hook.DELIVERY, name, frame)
            if verdict.verdict is Verdict.DROP:
                stats.drop(DropReason.EXTENSION)
                return
            if verdict.verdict is Verdict.REDIRECT:
                name = verdict.port
        self._write_port(name, frame, stats)

    def _write_port(self, name: str, frame: bytes | memoryview, stats: Stats) -> None:
        port = self._ports.get(name)
        if port is None:
            stats.drop(DropReason.NO_PORT)
            return
        if len(frame) > port.max_frame:
            self._write_segmented(port, frame, stats)
            return
        try:
            if self._partial:
                os.writev(port.fd, [tap.partial_vnet_header(frame), frame])
            elif self.config.offload:
                os.writev(port.fd, [tap.PLAIN_VNET_HDR, frame])
            else:
                os.write(port.fd, frame)
        except OSError:
            stats.drop(DropReason.SEND_FAILED)
            return
        stats.tx_packets += 1
        stats.tx_bytes += len(frame)

    def _write_segmented(self, port: _Port, frame: bytes | memoryview, stats: Stats) -> None:
        """A frame longer than a kernel port's MTU (a TSO super-frame from a host that sends them):
        the kernel cuts it into segments for qemu (or hands it whole to a guest that takes TSO)."""
        cut = (
            tap.gso_vnet_header(frame, port.max_frame - ETHERNET_HEADER_LEN) if self.config.offload else None
        )
        if cut is None:
            stats.drop(DropReason.TOO_BIG)
            return
        try:
            os.writev(port.fd, cut)
        except OSError:
            stats.drop(DropReason.SEND_FAILED)
            return
        stats.tx_packets += 1
        stats.tx_bytes += len(frame)

    def _extension_verdict(self, verdict: HookResult, frame: memoryview, stats: Stats) -> None:
        if verdict.verdict is Verdict.DROP:
            stats.drop(DropReason.EXTENSION)
        else:
            self._write_port(verdict.port, frame, stats)

    # ----- the packet path: wire -> VMs -----

    def _wire_loop(self) -> None:
        stats = self._wire_stats
        buffer = bytearray(BUFFER_BYTES)
        view = memoryview(buffer)
        wake = self._wake_wire[0]
        sock = self._sock
        if sock is None:
            return
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        poller.register(sock.fileno(), select.POLLIN)
        while not self._stop.is_set():
            for fd, _events in poller.poll(POLL_MS):
                if fd == wake:
                    _drain(wake)
                    continue
                for _ in range(BATCH):
                    try:
                        length = sock.recv_into(buffer)
                    except OSError:
                        break
                    self._from_wire(view, length, stats)

    def _from_wire(self, view: memoryview, length: int, stats: Stats) -> None:
        stats.rx_packets += 1
        stats.rx_bytes += length
        try:
            source, key, inner = parse_nvgre(view, length)
        except DecodeError as error:
            stats.drop(error.reason)
            return
        end = view[2] << 8 | view[3]
        frame = view[inner:end]
        if (
            view[inner + FLOW_ETHERTYPE_AT : inner + FLOW_MAC_END] == _IPV4
            and end - inner >= FLOW_ADDRESSES_END
        ):
            cache_key = (
                source
                + view[inner + FLOW_VSID_AT : inner + FLOW_VSID_END].tobytes()
                + view[inner : inner + FLOW_MAC_END].tobytes()
            ) + view[inner + FLOW_ADDRESSES_AT : inner + FLOW_ADDRESSES_END].tobytes()
            target = self._wire_cache.get(cache_key)
            if target is not None:
                self._deliver(target[1], frame, stats)
                return
        else:
            cache_key = b""
        with self.table_lock:
            data = frame.tobytes()
            try:
                action = decide_from_wire(self._context, source, key >> 8, data)
            except TableChangingError:
                stats.drop(DropReason.TABLE_CHANGING)
                return
            if action.cacheable and cache_key:
                _remember(
                    self._wire_cache, cache_key, (DELIVER, action.port, b"", b""), self.config.flow_cache_size
                )
        if action.kind is ActionKind.DELIVER:
            self._deliver(action.port, data, stats)
        else:
            stats.drop(action.reason or DropReason.NO_PORT)

    @staticmethod
    def _wake(pipe: tuple[int, int]) -> None:
        # A full pipe means the thread is already woken.
        with contextlib.suppress(BlockingIOError):
            os.write(pipe[1], b"x")


def _remember(cache: dict[bytes, CacheEntry], key: bytes, entry: CacheEntry, size: int) -> None:
    """Cache a decision; a full cache starts over (cheaper than LRU bookkeeping on every frame)."""
    if len(cache) >= size:
        cache.clear()
    cache[key] = entry


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        return


def _complete_checksum(buffer: bytearray, start: int, field_at: int, end: int) -> bool:
    """Finish a partial checksum (CHECKSUM_PARTIAL from the VM's kernel) in place, as a NIC would."""
    if not start < field_at + 2 <= end:
        return False
    # The field holds the pseudo-header sum the kernel seeded; summing over it completes the sum.
    value = ~ones_complement_sum(memoryview(buffer)[start:end]) & 0xFFFF
    # 0 means "no checksum" to UDP; 0xFFFF is the same sum in one's complement and valid for TCP too.
    _CHECKSUM.pack_into(buffer, field_at, value or 0xFFFF)
    return True
