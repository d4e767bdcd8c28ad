"""The replica service process: ``create_server(config)`` for either role, ``serve()`` and ``main()``."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import grpc

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.errors import OverlandError
from services.common.logs import configure_logging
from services.common.server import GrpcServer, build_server, wait_for_signal
from services.common.telemetry import Telemetry, install_log_correlation, server_interceptors
from services.replica.config import ReplicaConfig, parse_args
from services.replica.dr.servicer import ReceiverServicer, add_receiver_to_server
from services.replica.nbd import NbdServer
from services.replica.primary.manager import ReplicationManager
from services.replica.primary.servicer import ReplicaServicer
from services.replica.telemetry import ReplicaTelemetry
from services.replica.tuning import tune_allocator

log = logging.getLogger(__name__)

_SERVICES = replica_pb2.DESCRIPTOR.services_by_name
PRIMARY_SERVICE = _SERVICES["ReplicaService"].full_name
RECEIVER_SERVICE = _SERVICES["ReplicaReceiverService"].full_name


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


def create_server(config: ReplicaConfig) -> tuple[ReplicaServer, int]:
    """Validate ``config`` and start the role's services (with health and reflection)."""
    config.validate()
    tune_allocator()
    manager: ReplicationManager | None = None
    receiver: ReceiverServicer | None = None
    nbd: NbdServer | None = None
    telemetry = Telemetry.start(config.telemetry) if config.telemetry is not None else None
    traced = ReplicaTelemetry(telemetry)
    if config.role == "primary":
        host, _sep, nbd_port = config.nbd_bind.rpartition(":")
        nbd = NbdServer(host, int(nbd_port))
        manager = ReplicationManager(config, exporter=nbd, telemetry=traced)
        traced.observe(lambda: [manager.to_proto(vm) for vm in manager.replications()])
        servicer = ReplicaServicer(manager)

        def register(server: grpc.Server) -> None:
            replica_pb2_grpc.add_ReplicaServiceServicer_to_server(servicer, server)

        names: tuple[str, ...] = (PRIMARY_SERVICE,)
    else:
        receiver = ReceiverServicer(config, traced)

        def register(server: grpc.Server) -> None:
            add_receiver_to_server(receiver, server)

        names = (RECEIVER_SERVICE,)
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


def serve(config: ReplicaConfig) -> None:
    """Run until SIGINT/SIGTERM, then stop gracefully."""
    server, port = create_server(config)
    # The port line lets a parent process (tests, the demo) find a port-0 bind.
    nbd = f" nbd {server.nbd.port}" if server.nbd is not None else ""
    print(f"LISTENING {config.role} {port}{nbd}", flush=True)  # noqa: T201
    try:
        wait_for_signal()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    install_log_correlation()
    try:
        config = parse_args(argv)
    except OverlandError as error:
        log.error("bad configuration: %s", error.message)
        return 2
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
