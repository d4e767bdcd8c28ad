"""The Overland vswitch service: the agent that keeps a host's routing table in sync with etcd
(watcher, host registration, gRPC API) and the NVGRE datapath it feeds.

Names are imported on first use (PEP 562): ``python -m services.vswitch`` and the datapath load this
package first, and a restarting agent must get its datapath forwarding before it pays for the gRPC,
etcd and telemetry stacks (see ``services.vswitch.process``).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.vswitch.agent import Agent, HostRegistration, registration_to_write, status_due
    from services.vswitch.config import NVGRE_OVERHEAD, AgentConfig, BackoffPolicy, load_config
    from services.vswitch.datapath_interface import Datapath
    from services.vswitch.process import main, serve
    from services.vswitch.server import (
        GRPC_SERVICE,
        TableOnlyError,
        VswitchServer,
        VswitchServicer,
        create_server,
    )
    from services.vswitch.snapshot import SnapshotError, TableSnapshots, resume_forwarding
    from services.vswitch.watcher import TableWatcher, WatchCursors, WatcherStats, watch_prefixes

_MODULES = {
    "services.vswitch.agent": ("Agent", "HostRegistration", "registration_to_write", "status_due"),
    "services.vswitch.config": ("NVGRE_OVERHEAD", "AgentConfig", "BackoffPolicy", "load_config"),
    "services.vswitch.datapath_interface": ("Datapath",),
    "services.vswitch.process": ("main", "serve"),
    "services.vswitch.server": (
        "GRPC_SERVICE",
        "TableOnlyError",
        "VswitchServer",
        "VswitchServicer",
        "create_server",
        "load_config",
    ),
    "services.vswitch.snapshot": ("SnapshotError", "TableSnapshots", "resume_forwarding"),
    "services.vswitch.watcher": ("TableWatcher", "WatchCursors", "WatcherStats", "watch_prefixes"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'services.vswitch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "GRPC_SERVICE",
    "NVGRE_OVERHEAD",
    "Agent",
    "AgentConfig",
    "BackoffPolicy",
    "Datapath",
    "HostRegistration",
    "SnapshotError",
    "TableOnlyError",
    "TableSnapshots",
    "TableWatcher",
    "VswitchServer",
    "VswitchServicer",
    "WatchCursors",
    "WatcherStats",
    "create_server",
    "load_config",
    "main",
    "registration_to_write",
    "resume_forwarding",
    "serve",
    "status_due",
    "watch_prefixes",
]
