"""ReplicaService: management of the primary's replications over gRPC, a thin shell over the manager."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.replica.primary.manager import ReplicationManager


class ReplicaServicer(replica_pb2_grpc.ReplicaServiceServicer):
    """Each RPC validates through the manager and returns the VM's Replication view."""

    def __init__(self, manager: ReplicationManager):
        self._manager = manager

    def EnableReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.EnableReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Replication:
        return self._manager.to_proto(self._manager.enable(request))

    def GetReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.GetReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Replication:
        return self._manager.to_proto(self._manager.get(request.vm_name))

    def ListReplications(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ListReplicationsRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ListReplicationsResponse:
        return replica_pb2.ListReplicationsResponse(
            replications=[self._manager.to_proto(vm) for vm in self._manager.replications()]
        )

    def PauseReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.PauseReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Replication:
        return self._manager.to_proto(self._manager.pause(request.vm_name))

    def ResumeReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ResumeReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Replication:
        return self._manager.to_proto(self._manager.resume(request.vm_name))

    def ResyncReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ResyncReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Replication:
        return self._manager.to_proto(self._manager.resync(request.vm_name))

    def DisableReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.DisableReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Replication:
        return self._manager.to_proto(self._manager.disable(request.vm_name))

    def ReplicateNow(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ReplicateNowRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Cycle:
        return self._manager.replicate_now(request.vm_name).to_proto()

    def WatchCycle(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.WatchCycleRequest, context: grpc.ServicerContext
    ) -> Iterator[replica_pb2.Cycle]:
        yield from self._manager.watch_cycle(request.vm_name, request.id, context.is_active)

    def ListRecoveryPoints(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ListRecoveryPointsRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ListRecoveryPointsResponse:
        return replica_pb2.ListRecoveryPointsResponse(
            recovery_points=self._manager.recovery_points(request.vm_name)
        )

    def SetReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.SetReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.Replication:
        changed = self._manager.set_replication(
            request.vm_name, request.settings, request.fields, request.resync
        )
        return self._manager.to_proto(changed)

    def TestReplicationConnection(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.TestReplicationConnectionRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ConnectionTest:
        return self._manager.test_connection(request.replica_server, request.vm_name)
