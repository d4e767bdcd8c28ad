"""Packet counters, one set per forwarding thread (no lock on the packet path), summed on demand."""

from __future__ import annotations

from collections.abc import Iterable

from overland.v1 import vswitch_pb2
from services.vswitch.packets import DropReason


class Stats:
    """The counters one thread updates; read by others only through ``total``."""

    __slots__ = (
        "arp_replies",
        "drops",
        "icmp_frag_needed",
        "rx_bytes",
        "rx_packets",
        "tx_bytes",
        "tx_packets",
    )

    def __init__(self) -> None:
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0
        self.arp_replies = 0
        self.icmp_frag_needed = 0
        self.drops: dict[str, int] = {}

    def drop(self, reason: DropReason | str) -> None:
        key = str(reason)
        self.drops[key] = self.drops.get(key, 0) + 1


def total(stats: Iterable[Stats]) -> vswitch_pb2.Counters:
    counters = vswitch_pb2.Counters()
    for item in stats:
        counters.rx_packets += item.rx_packets
        counters.rx_bytes += item.rx_bytes
        counters.tx_packets += item.tx_packets
        counters.tx_bytes += item.tx_bytes
        counters.arp_replies += item.arp_replies
        counters.icmp_frag_needed += item.icmp_frag_needed
        for reason, count in list(item.drops.items()):
            counters.drops[reason] += count
    return counters
