"""The failover RPCs of ``ReplicaService`` (Start-, Stop-, Complete-VMFailover, Set-VMReplication
-Reverse, the VM's failover state and history), a mixin over the site's ``SiteFailover``.

Who asks is recorded with every transition: the caller's TLS identity (its certificate's CN) when
the server requires client certificates, else its address as gRPC sees it.
"""

from __future__ import annotations

import grpc

from overland.v1 import replica_pb2
from services.common.errors import FieldViolation, InvalidArgument
from services.replica.failover.site import SiteFailover


def caller(context: grpc.ServicerContext) -> str:
    """The caller's TLS identity, else its peer address."""
    names = [bytes(n).decode(errors="replace") for n in context.auth_context().get("x509_common_name", [])]
    return names[0] if names else context.peer()


class FailoverRpcs:
    """Mixed into the site's ``ReplicaService`` servicer; ``failover`` is the site's."""

    failover: SiteFailover

    def StartVmFailover(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.StartVmFailoverRequest, context: grpc.ServicerContext
    ) -> replica_pb2.VmFailover:
        if request.as_test and request.prepare:
            message = "a failover is a test or a prepare, not both"
            raise InvalidArgument(message, [FieldViolation("prepare", message)])
        return self.failover.start(request, caller(context))

    def StopVmFailover(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.StopVmFailoverRequest, context: grpc.ServicerContext
    ) -> replica_pb2.VmFailover:
        return self.failover.stop(request.vm_name, caller(context))

    def CompleteVmFailover(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.CompleteVmFailoverRequest, context: grpc.ServicerContext
    ) -> replica_pb2.VmFailover:
        return self.failover.complete(request.vm_name, caller(context))

    def SetVmReplication(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.SetVmReplicationRequest, context: grpc.ServicerContext
    ) -> replica_pb2.VmFailover:
        if not request.reverse:
            message = "reverse is the only change SetVmReplication makes"
            raise InvalidArgument(message, [FieldViolation("reverse", message)])
        return self.failover.reverse(request.vm_name, caller(context))

    def GetVmFailover(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.GetVmFailoverRequest, context: grpc.ServicerContext
    ) -> replica_pb2.VmFailover:
        return self.failover.view(request.vm_name)

    def ListRecoveryPoints(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ListRecoveryPointsRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ListRecoveryPointsResponse:
        return replica_pb2.ListRecoveryPointsResponse(
            recovery_points=self.failover.recovery_points(request.vm_name)
        )

    def ListVmFailoverHistory(  # noqa: N802 (gRPC method name)
        self, request: replica_pb2.ListVmFailoverHistoryRequest, context: grpc.ServicerContext
    ) -> replica_pb2.ListVmFailoverHistoryResponse:
        return replica_pb2.ListVmFailoverHistoryResponse(events=self.failover.history(request.vm_name))
