"""The replica service's wiring: ``create_server`` starts either role's servicers (with health and
reflection) on one gRPC server (``process.py`` runs it as a process)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.clock import SYSTEM_CLOCK, Clock
from services.common.server import GrpcServer, build_server
from services.common.telemetry import Telemetry, server_interceptors
from services.replica.config import ReplicaConfig
from services.replica.dr.servicer import ReceiverServicer, add_receiver_to_server
from services.replica.nbd import NbdServer
from services.replica.primary.manager import ReplicationManager
from services.replica.primary.servicer import ReplicaServicer
from services.replica.telemetry import ReplicaTelemetry
from services.replica.tuning import tune_allocator

log = logging.getLogger(__name__)

# The gRPC services' full names (health, reflection); their OpenTelemetry names are config.otel_name's.
_SERVICES = replica_pb2.DESCRIPTOR.services_by_name
PRIMARY_GRPC_SERVICE = _SERVICES["ReplicaService"].full_name
RECEIVER_GRPC_SERVICE = _SERVICES["ReplicaReceiverService"].full_name


@dataclass
class ReplicaServer:
    """A running replica service: the gRPC server and, at a primary, the replication manager."""

    grpc_server: GrpcServer
    manager: ReplicationManager | None
    receiver: ReceiverServicer | None
    nbd: NbdServer | None = None
    telemetry: Telemetry | None = None

    @property
    def port(self) -> int:
        return self.grpc_server.port

    def stop(self) -> None:
        """Graceful: stop taking calls, let running ones finish, stop the scheduler, close the disks."""
        self.grpc_server.stop()
        if self.nbd is not None:
            self.nbd.stop()
        if self.manager is not None:
            self.manager.close()
        if self.telemetry is not None:
            # Exports what the batch processor still holds.
            self.telemetry.shutdown()


def create_server(config: ReplicaConfig, *, clock: Clock = SYSTEM_CLOCK) -> tuple[ReplicaServer, int]:
    """Validate ``config`` and start the role's services. ``clock``: the DR site's (recovery point
    times and their pruning)."""
    config.validate()
    tune_allocator()
    manager: ReplicationManager | None = None
    receiver: ReceiverServicer | None = None
    nbd: NbdServer | None = None
    telemetry = Telemetry.start(config.telemetry)
    traced = ReplicaTelemetry(telemetry)
    if config.role == "primary":
        host, _sep, nbd_port = config.nbd_bind.rpartition(":")
        nbd = NbdServer(host, int(nbd_port))
        manager = ReplicationManager(config, exporter=nbd, telemetry=traced)
        traced.observe(lambda: [manager.to_proto(vm) for vm in manager.replications()])
        servicer = ReplicaServicer(manager)

        def register(server: grpc.Server) -> None:
            replica_pb2_grpc.add_ReplicaServiceServicer_to_server(servicer, server)

        names: tuple[str, ...] = (PRIMARY_GRPC_SERVICE,)
    else:
        receiver = ReceiverServicer(config, traced, clock=clock)

        def register(server: grpc.Server) -> None:
            add_receiver_to_server(receiver, server)

        names = (RECEIVER_GRPC_SERVICE,)
    try:
        built = build_server(config.server, names, register, server_interceptors(telemetry))
        if nbd is not None:
            nbd.start()
    except Exception:
        if manager is not None:
            manager.close()
        if telemetry is not None:
            telemetry.shutdown()
        raise
    if manager is not None:
        manager.start()
    log.info(
        "replica service listening",
        extra={"role": config.role, "port": built.port, "nbd_port": nbd.port if nbd else None},
    )
    return ReplicaServer(built, manager, receiver, nbd, telemetry), built.port
