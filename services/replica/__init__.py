"""The Overland replica service: VHD change tracking at the primary, delta streaming to a DR site,
atomic commits and recovery points there (after Hyper-V Replica).

Grouped by the site a module serves:

* ``primary/`` — the primary: management (``ReplicaService``), change tracking (``primary/tracking``),
  the cycle scheduler and the cycles, and the client side of the delta stream.
* ``dr/`` — the DR site: ``ReplicaReceiverService``, staging, the atomic commit, recovery points.
* shared — the delta stream's byte formats (``codec/``), durable file updates (``files``), disks
  (``vhd/``) and their NBD export (``nbd/``), and at the top the states, settings, errors, telemetry
  and the process (config, server).

The replication API (states, settings, errors, the server) is exported here.
"""

from services.replica.config import ReplicaConfig, load_config
from services.replica.errors import (
    ChunkCorrupted,
    CycleAborted,
    DuplicateDelta,
    InvalidReplicationSettings,
    InvalidTransition,
    MalformedDelta,
    ReplicaError,
    ReplicaLost,
    ReplicaStateCorrupted,
    ReplicaStorageFull,
    ReplicationExists,
    ReplicationNotFound,
    ReplicaUnreachable,
    SequenceError,
    UnauthorizedPrimary,
    UnknownVm,
)
from services.replica.process import main, serve
from services.replica.server import ReplicaServer, create_server
from services.replica.settings import InitialMethod, ReplicationPolicy, validate_enable
from services.replica.states import (
    CycleOutcome,
    Event,
    Record,
    ReplicationHealth,
    ReplicationState,
    Statistics,
    health,
    statistics,
    transition,
)

__all__ = [
    "ChunkCorrupted",
    "CycleAborted",
    "CycleOutcome",
    "DuplicateDelta",
    "Event",
    "InitialMethod",
    "InvalidReplicationSettings",
    "InvalidTransition",
    "MalformedDelta",
    "Record",
    "ReplicaConfig",
    "ReplicaError",
    "ReplicaLost",
    "ReplicaServer",
    "ReplicaStateCorrupted",
    "ReplicaStorageFull",
    "ReplicaUnreachable",
    "ReplicationExists",
    "ReplicationHealth",
    "ReplicationNotFound",
    "ReplicationPolicy",
    "ReplicationState",
    "SequenceError",
    "Statistics",
    "UnauthorizedPrimary",
    "UnknownVm",
    "create_server",
    "health",
    "load_config",
    "main",
    "serve",
    "statistics",
    "transition",
    "validate_enable",
]
