"""The demo tenancy (services.vswitch.lab) on two hosts as a routing table, for the pure datapath tests."""

from __future__ import annotations

from services.common.table import RoutingTable
from services.vswitch.lab import BLUE_A, BLUE_B, RED_A, demo_entries, demo_vms, snapshot

PA1, PA2 = "198.18.0.1", "198.18.0.2"
VMS = demo_vms([PA1, PA2])
__all__ = ["BLUE_A", "BLUE_B", "PA1", "PA2", "RED_A", "VMS", "table"]


def table() -> RoutingTable:
    routing = RoutingTable()
    routing.reset(snapshot(demo_entries([PA1, PA2], list(VMS.values()))), revision=1)
    return routing
