"""The switch extension chain: ordered hooks at ingress from a VM port and at delivery to one.

As in the Windows Server 2012 extensible switch, each hook returns continue, drop or redirect (to
another port); the first hook that does not continue decides. Three kinds are built in:

- capture: writes the frames it sees to a pcap file (``settings``: ``path`` required, ``direction``
  ingress|delivery|both, ``ports`` comma-separated names, ``snaplen``);
- filter: drops frames that match (``protocols`` e.g. ``icmp,tcp,17``, ``sources`` / ``destinations``
  CIDR lists, ``direction``);
- forward: redirects matching frames to the port ``redirect_port`` (an external controller's choice,
  e.g. a virtual appliance), with the same match settings as filter.
"""

from __future__ import annotations

import enum
import ipaddress
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from overland.v1 import vswitch_pb2
from services.vswitch.datapath.errors import ExtensionError
from services.vswitch.packets import (
    ETHERNET_HEADER_LEN,
    LINKTYPE_ETHERNET,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    is_ipv4_frame,
    pcap_file_header,
    pcap_record,
)

Kind = vswitch_pb2.Extension.Kind
_PROTOCOL_NAMES = {"icmp": PROTO_ICMP, "tcp": PROTO_TCP, "udp": PROTO_UDP}


class Verdict(enum.Enum):
    CONTINUE = "continue"
    DROP = "drop"
    REDIRECT = "redirect"


class Hook(enum.Enum):
    INGRESS = "ingress"
    DELIVERY = "delivery"


@dataclass(frozen=True, slots=True)
class HookResult:
    verdict: Verdict
    port: str = ""


CONTINUE = HookResult(Verdict.CONTINUE)
DROP = HookResult(Verdict.DROP)


@dataclass(frozen=True, slots=True)
class FrameMatch:
    """A pure match on an Ethernet frame's IPv4 protocol and addresses; empty fields match anything."""

    protocols: frozenset[int] = frozenset()
    sources: tuple[ipaddress.IPv4Network, ...] = ()
    destinations: tuple[ipaddress.IPv4Network, ...] = ()

    def matches(self, frame: bytes | bytearray | memoryview) -> bool:
        if not (self.protocols or self.sources or self.destinations):
            return True
        if not is_ipv4_frame(frame) or len(frame) < ETHERNET_HEADER_LEN + 20:
            return False
        if self.protocols and frame[23] not in self.protocols:
            return False
        if self.sources and not _in_any(bytes(frame[26:30]), self.sources):
            return False
        return not self.destinations or _in_any(bytes(frame[30:34]), self.destinations)

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> FrameMatch:
        protocols = set()
        for item in _split(settings.get("protocols", "")):
            if item.lower() in _PROTOCOL_NAMES:
                protocols.add(_PROTOCOL_NAMES[item.lower()])
            elif item.isdigit() and int(item) <= 255:
                protocols.add(int(item))
            else:
                raise ExtensionError(f"unknown protocol {item!r} (icmp, tcp, udp or 0..255)")
        return cls(frozenset(protocols), _networks(settings, "sources"), _networks(settings, "destinations"))


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _networks(settings: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network, ...]:
    try:
        return tuple(ipaddress.IPv4Network(item, strict=False) for item in _split(settings.get(name, "")))
    except ValueError as error:
        raise ExtensionError(f"{name}: {error}") from error


def _in_any(address: bytes, networks: Iterable[ipaddress.IPv4Network]) -> bool:
    ip = ipaddress.IPv4Address(address)
    return any(ip in network for network in networks)


def _hooks_of(settings: Mapping[str, str]) -> frozenset[Hook]:
    direction = settings.get("direction", "both")
    if direction == "both":
        return frozenset(Hook)
    try:
        return frozenset((Hook(direction),))
    except ValueError as error:
        raise ExtensionError(f"direction must be ingress, delivery or both, not {direction!r}") from error


class SwitchExtension:
    """Base of the extensions: the configuration and the hook points it runs at."""

    def __init__(self, config: vswitch_pb2.Extension):
        self.config = vswitch_pb2.Extension()
        self.config.CopyFrom(config)
        self.hooks = _hooks_of(config.settings)

    @property
    def name(self) -> str:
        return self.config.name

    def run(self, hook: Hook, port: str, frame: bytes | bytearray | memoryview) -> HookResult:
        return CONTINUE

    def close(self) -> None:
        """Release what the extension holds (files); called when it is replaced or the switch stops."""


class CaptureExtension(SwitchExtension):
    """Writes every frame it sees to a pcap file; never changes the verdict."""

    def __init__(self, config: vswitch_pb2.Extension):
        super().__init__(config)
        path = config.settings.get("path", "")
        if not path:
            raise ExtensionError("capture needs settings.path")
        snaplen = config.settings.get("snaplen", "65535")
        if not snaplen.isdigit() or not 64 <= int(snaplen) <= 262144:
            raise ExtensionError("capture snaplen must be 64..262144")
        self.snaplen = int(snaplen)
        self.ports = frozenset(_split(config.settings.get("ports", "")))
        self._lock = threading.Lock()
        try:
            self._file: BinaryIO | None = Path(path).open("wb")  # noqa: SIM115 - open for the extension's life
        except OSError as error:
            raise ExtensionError(f"cannot open capture file {path}: {error.strerror}") from error
        self._file.write(pcap_file_header(LINKTYPE_ETHERNET, self.snaplen))
        self._file.flush()
        self.captured = 0

    def run(self, hook: Hook, port: str, frame: bytes | bytearray | memoryview) -> HookResult:
        if self.ports and port not in self.ports:
            return CONTINUE
        record = pcap_record(time.time_ns(), frame, self.snaplen)
        with self._lock:
            if self._file is not None:
                self._file.write(record)
                self._file.flush()
                self.captured += 1
        return CONTINUE

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class FilterExtension(SwitchExtension):
    """Drops matching frames (counted as drops by extension)."""

    def __init__(self, config: vswitch_pb2.Extension):
        super().__init__(config)
        self.match = FrameMatch.from_settings(config.settings)

    def run(self, hook: Hook, port: str, frame: bytes | bytearray | memoryview) -> HookResult:
        return DROP if self.match.matches(frame) else CONTINUE


class ForwardExtension(SwitchExtension):
    """Redirects matching frames to another port, as a forwarding extension driven by a controller."""

    def __init__(self, config: vswitch_pb2.Extension):
        super().__init__(config)
        target = config.settings.get("redirect_port", "")
        if not target:
            raise ExtensionError("forward needs settings.redirect_port")
        self.result = HookResult(Verdict.REDIRECT, target)
        self.match = FrameMatch.from_settings(config.settings)

    def run(self, hook: Hook, port: str, frame: bytes | bytearray | memoryview) -> HookResult:
        if port != self.result.port and self.match.matches(frame):
            return self.result
        return CONTINUE


_KINDS: dict[int, type[SwitchExtension]] = {
    Kind.KIND_CAPTURE: CaptureExtension,
    Kind.KIND_FILTER: FilterExtension,
    Kind.KIND_FORWARD: ForwardExtension,
}


def build_extension(config: vswitch_pb2.Extension) -> SwitchExtension:
    if not config.name:
        raise ExtensionError("extension name is required")
    kind = _KINDS.get(config.kind)
    if kind is None:
        raise ExtensionError(f"unknown extension kind {config.kind}")
    return kind(config)


class ExtensionChain:
    """The ordered extensions. Hook tuples are rebuilt on every change, so the packet path reads an
    immutable tuple (empty when nothing runs there) without a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._extensions: dict[str, SwitchExtension] = {}
        self.ingress: tuple[SwitchExtension, ...] = ()
        self.delivery: tuple[SwitchExtension, ...] = ()

    def configure(self, config: vswitch_pb2.Extension) -> vswitch_pb2.Extension:
        """Add or replace the extension named ``config.name``; a disabled one is kept but does not run."""
        extension = build_extension(config)
        with self._lock:
            old = self._extensions.pop(config.name, None)
            self._extensions[config.name] = extension
            self._rebuild()
        if old is not None:
            old.close()
        return extension.config

    def configs(self) -> list[vswitch_pb2.Extension]:
        with self._lock:
            return [extension.config for extension in self._ordered()]

    def close(self) -> None:
        with self._lock:
            extensions = list(self._extensions.values())
            self._extensions.clear()
            self._rebuild()
        for extension in extensions:
            extension.close()

    def _ordered(self) -> list[SwitchExtension]:
        return sorted(self._extensions.values(), key=lambda e: (e.config.order, e.config.name))

    def _rebuild(self) -> None:
        running = [e for e in self._ordered() if e.config.enabled]
        self.ingress = tuple(e for e in running if Hook.INGRESS in e.hooks)
        self.delivery = tuple(e for e in running if Hook.DELIVERY in e.hooks)


def run_hooks(
    extensions: tuple[SwitchExtension, ...], hook: Hook, port: str, frame: bytes | bytearray | memoryview
) -> HookResult:
    """The first verdict other than continue, in chain order."""
    for extension in extensions:
        result = extension.run(hook, port, frame)
        if result.verdict is not Verdict.CONTINUE:
            return result
    return CONTINUE
