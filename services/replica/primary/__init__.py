"""The primary site: tracked disks, the cycle scheduler, and ReplicaService (management)."""

from services.replica.primary.gate import GatedDevice
from services.replica.primary.manager import ReplicationManager, VmReplication, export_name
from services.replica.primary.servicer import ReplicaServicer

__all__ = ["GatedDevice", "ReplicaServicer", "ReplicationManager", "VmReplication", "export_name"]
