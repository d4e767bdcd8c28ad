"""The Overland replica service: one process per site (after Hyper-V Replica and the Hyper-V host).
A site runs VMs on qemu, is the primary of the VMs it replicates (VHD change tracking, delta
streaming) and the replica of the VMs other sites replicate to it (atomic commits, recovery points).

Grouped by the role a module serves; a VM's role at a site is that VM's state:

* ``primary/`` — replications this site is the primary of: management (``ReplicaService``), change
  tracking (``primary/tracking``), the cycle scheduler and the cycles, the client side of the stream.
* ``dr/`` — replicas this site keeps: ``ReplicaReceiverService``, staging, the atomic commit,
  recovery points.
* ``vm/`` — the VM runtime (``VmService``): VMs on qemu, the guest image's pure parts.
* shared — the delta stream's byte formats (``codec/``), durable file updates (``files``), disks
  (``vhd/``), their NBD export (``nbd/``) and their one owner per site (``disks``), and at the top the
  states, settings, errors, telemetry and the process (config, server).

The replication API (states, settings, errors, the server) is exported here.
"""

from services.replica.config import ReplicaConfig, VmRuntimeConfig, load_config
from services.replica.disks import DiskInUse, DiskOwned, SiteDisk, SiteDisks, export_name
from services.replica.errors import (
    ChunkCorrupted,
    CycleAborted,
    DrSiteError,
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
    "DiskInUse",
    "DiskOwned",
    "DrSiteError",
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
    "SiteDisk",
    "SiteDisks",
    "Statistics",
    "UnauthorizedPrimary",
    "UnknownVm",
    "VmRuntimeConfig",
    "create_server",
    "export_name",
    "health",
    "load_config",
    "main",
    "serve",
    "statistics",
    "transition",
    "validate_enable",
]
