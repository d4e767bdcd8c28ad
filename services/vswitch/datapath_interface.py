"""``Datapath``: what the vswitch agent needs of a datapath, the one interface between them.

The agent (agent.py), the service (server.py) and resuming from a saved table (snapshot.py) hold a
datapath only through this protocol; ``NvgreSwitch`` (services/vswitch/datapath/) is the datapath that
forwards, and tests give the agent recorders. It lives apart from the agent so that snapshot.py, which
the agent imports, can name it too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from overland.v1 import vswitch_pb2
    from services.common.table import RoutingTable, TableDelta


class Datapath(Protocol):
    """A datapath the agent feeds. ``table_lock`` (reentrant) is held by the agent around every table
    update and ``apply``, and by the datapath around every decision that reads the table, so a decision
    never sees half of a change."""

    table_lock: threading.RLock

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def apply(self, table: RoutingTable, delta: TableDelta) -> None:
        """Adjust ports and caches to a table change; called from one thread, never with a flush."""
        ...

    def attach_port(self, port: vswitch_pb2.Port) -> vswitch_pb2.Port: ...

    def detach_port(self, name: str) -> None: ...

    def ports(self) -> Sequence[vswitch_pb2.Port]: ...

    def counters(self) -> vswitch_pb2.Counters: ...

    def extensions(self) -> Sequence[vswitch_pb2.Extension]: ...

    def configure_extension(self, extension: vswitch_pb2.Extension) -> vswitch_pb2.Extension: ...
