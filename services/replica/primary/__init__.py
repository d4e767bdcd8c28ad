"""The primary site: ReplicaService (management), the cycle scheduler and the cycles, the client side of
the delta stream; its change tracking is the ``tracking`` subpackage."""

from services.replica.primary.gate import GatedDevice
from services.replica.primary.manager import ReplicationManager
from services.replica.primary.replication import VmReplication
from services.replica.primary.servicer import ReplicaServicer

__all__ = ["GatedDevice", "ReplicaServicer", "ReplicationManager", "VmReplication"]
