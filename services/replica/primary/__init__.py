"""The primary site: tracked disks, the cycle scheduler, and ReplicaService (management)."""
