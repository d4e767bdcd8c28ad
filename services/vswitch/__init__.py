"""The Overland vswitch service: the agent that keeps a host's routing table in sync with etcd
(watcher, host registration, gRPC API) and the NVGRE datapath it feeds."""

from services.vswitch.agent import Agent, Datapath, HostRegistration, status_due
from services.vswitch.config import (
    NVGRE_OVERHEAD,
    AgentConfig,
    BackoffPolicy,
    VswitchConfigError,
    config_from_args,
)
from services.vswitch.server import (
    TableOnlyError,
    VswitchServer,
    VswitchServicer,
    create_server,
    main,
    serve,
)
from services.vswitch.watcher import TableWatcher, WatchCursors, WatcherStats, watch_prefixes

__all__ = [
    "NVGRE_OVERHEAD",
    "Agent",
    "AgentConfig",
    "BackoffPolicy",
    "Datapath",
    "HostRegistration",
    "TableOnlyError",
    "TableWatcher",
    "VswitchConfigError",
    "VswitchServer",
    "VswitchServicer",
    "WatchCursors",
    "WatcherStats",
    "config_from_args",
    "create_server",
    "main",
    "serve",
    "status_due",
    "watch_prefixes",
]
