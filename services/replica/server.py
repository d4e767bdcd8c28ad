"""The replica service's wiring: ``create_server`` starts one site — its disks and their NBD export,
its VMs (``VmService``), its replications and their failover (``ReplicaService``) and, with an
allow-list, its receiver
(``ReplicaReceiverService``) — with health and reflection on one gRPC server (``process.py`` runs it
as a process)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from overland.v1 import replica_pb2, replica_pb2_grpc, vm_pb2, vm_pb2_grpc
from services.common.access import Authorization
from services.common.clock import SYSTEM_CLOCK, Clock
from services.common.server import GrpcServer, build_server
from services.common.telemetry import Telemetry, server_interceptors
from services.replica.access import RULES
from services.replica.config import ReplicaConfig
from services.replica.disks import SiteDisks
from services.replica.dr.servicer import ReceiverServicer, add_receiver_to_server
from services.replica.failover.servicer import FailoverRpcs
from services.replica.failover.site import SiteFailover
from services.replica.nbd import NbdServer
from services.replica.primary.manager import ReplicationManager
from services.replica.primary.servicer import ReplicaServicer
from services.replica.telemetry import ReplicaTelemetry
from services.replica.tuning import tune_allocator
from services.replica.vm.host import VmHost
from services.replica.vm.ports import site_ports
from services.replica.vm.servicer import VmServicer

log = logging.getLogger(__name__)

# The gRPC services' full names (health, reflection).
_SERVICES = replica_pb2.DESCRIPTOR.services_by_name
PRIMARY_GRPC_SERVICE = _SERVICES["ReplicaService"].full_name
RECEIVER_GRPC_SERVICE = _SERVICES["ReplicaReceiverService"].full_name
VM_GRPC_SERVICE = vm_pb2.DESCRIPTOR.services_by_name["VmService"].full_name


class SiteReplicaServicer(FailoverRpcs, ReplicaServicer):
    """The site's ``ReplicaService``: its replications (``ReplicaServicer``) and failover."""

    def __init__(self, manager: ReplicationManager, failover: SiteFailover):
        super().__init__(manager)
        self.failover = failover


@dataclass
class ReplicaServer:
    """A running site: the gRPC server, its replications, its VMs, its receiver (with an allow-list),
    and the NBD export of its disks."""

    grpc_server: GrpcServer
    manager: ReplicationManager
    host: VmHost
    receiver: ReceiverServicer | None
    disks: SiteDisks
    nbd: NbdServer
    telemetry: Telemetry | None = None
    failover: SiteFailover | None = None

    @property
    def port(self) -> int:
        return self.grpc_server.port

    def stop(self) -> None:
        """Graceful: stop taking calls, let running ones finish, stop the export (qemu's NBD clients
        wait for the next process: the VMs keep running), stop the scheduler, close the disks."""
        self.grpc_server.stop()
        self.nbd.stop()
        if self.failover is not None:
            self.failover.close()
        self.host.close()
        self.manager.close()
        self.disks.close()
        if self.telemetry is not None:
            # Exports what the batch processor still holds.
            self.telemetry.shutdown()


def create_server(config: ReplicaConfig, *, clock: Clock = SYSTEM_CLOCK) -> tuple[ReplicaServer, int]:
    """Validate ``config`` and start the site. ``clock``: its receiver's (recovery point times and
    their pruning)."""
    config.validate()
    tune_allocator()
    telemetry = Telemetry.start(config.telemetry)
    traced = ReplicaTelemetry(telemetry)
    host_name, _sep, nbd_port = config.nbd_bind.rpartition(":")
    socket_path = config.nbd_socket_path
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    nbd = NbdServer(host_name, int(nbd_port), unix_path=socket_path)
    disks = SiteDisks(nbd)
    host: VmHost | None = None
    manager: ReplicationManager | None = None
    failover: SiteFailover | None = None
    try:
        # Replicas with point disks open them first: a failover VM that survived the last process
        # runs on them. Then the VMs and the replications open theirs, all before the export serves
        # them: a VM that survived reconnects only once every write it sends is tracked as before.
        receiver = (
            ReceiverServicer(config, traced, clock=clock, disks=disks) if config.allowed_primaries else None
        )
        host = VmHost(
            config.state_dir / "vms",
            config.vm,
            disks,
            site_ports(config.vm.vswitch_endpoint, config.vm.netns, config.vm.vswitch_tls),
            accel_cache=config.state_dir / "accel.json",
        )
        manager = ReplicationManager(config, disks=disks, telemetry=traced, definitions=host.definition_of)
        host.replicated = manager.has
        running = manager
        traced.observe(lambda: [running.to_proto(vm) for vm in running.replications()])
        if receiver is not None:
            traced.observe_points(receiver.point_counts)
        failover = SiteFailover(config, host=host, manager=manager, receiver=receiver, telemetry=traced)
        servicers = (SiteReplicaServicer(manager, failover), VmServicer(host))

        def register(server: grpc.Server) -> None:
            replica_pb2_grpc.add_ReplicaServiceServicer_to_server(servicers[0], server)
            vm_pb2_grpc.add_VmServiceServicer_to_server(servicers[1], server)
            if receiver is not None:
                add_receiver_to_server(receiver, server)

        names = (PRIMARY_GRPC_SERVICE, VM_GRPC_SERVICE, *((RECEIVER_GRPC_SERVICE,) if receiver else ()))
        built = build_server(
            config.server,
            names,
            register,
            server_interceptors(telemetry),
            authorization=Authorization.of_server(RULES, config.server),
        )
        # Both read the endpoint this site advertises only when they call other sites, which starts
        # after this: the one they hold now names the port the server got.
        manager.config = failover.config = config.bound_to(built.port)
        nbd.start()
    except Exception:
        if failover is not None:
            failover.close()
        if host is not None:
            host.close()
        if manager is not None:
            manager.close()
        disks.close()
        if telemetry is not None:
            telemetry.shutdown()
        raise
    manager.start()
    host.start_monitor()
    log.info(
        "replica site listening",
        extra={"site": config.site_name, "port": built.port, "nbd_port": nbd.port, "vms": len(host.vms())},
    )
    return ReplicaServer(built, manager, host, receiver, disks, nbd, telemetry, failover), built.port
