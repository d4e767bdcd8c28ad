"""The vswitch agent as a gRPC service: ``VswitchServicer`` over an ``Agent``, and ``create_server``,
which wires the agent, its etcd client, its datapath and the gRPC server (``process.py`` runs it as a
process, after resuming the datapath without this module's imports)."""

# gRPC servicer methods carry the RPC names of vswitch.proto.
# ruff: noqa: N802
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from overland.v1 import vswitch_pb2, vswitch_pb2_grpc
from services.common.access import Authorization
from services.common.clock import SYSTEM_CLOCK, Clock
from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.common.etcd_kv import EtcdKV
from services.common.kv import KV
from services.common.server import GrpcServer, build_server
from services.common.table import RoutingTable
from services.common.telemetry import Telemetry, server_interceptors
from services.vswitch import access
from services.vswitch.agent import Agent
from services.vswitch.config import AgentConfig
from services.vswitch.datapath_interface import Datapath
from services.vswitch.telemetry import AgentTelemetry

log = logging.getLogger(__name__)

# The gRPC service's full name (health, reflection); its OpenTelemetry name is overland.defaults.VSWITCH's.
GRPC_SERVICE = vswitch_pb2.DESCRIPTOR.services_by_name["VswitchService"].full_name


class TableOnlyError(FailedPrecondition):
    """A datapath call reached an agent that runs without a datapath."""


class VswitchServicer(vswitch_pb2_grpc.VswitchServiceServicer):
    """The agent's API. Datapath calls are delegated; in table-only mode writes to it are refused."""

    def __init__(self, agent: Agent):
        self._agent = agent

    def _datapath(self) -> Datapath:
        if self._agent.datapath is None:
            raise TableOnlyError("this agent runs table-only: it has no datapath")
        return self._agent.datapath

    def GetAgentStatus(
        self, request: vswitch_pb2.GetAgentStatusRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.AgentStatus:
        return self._agent.status()

    def DumpTable(
        self, request: vswitch_pb2.DumpTableRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.DumpTableResponse:
        return self._agent.dump()

    def AttachPort(
        self, request: vswitch_pb2.AttachPortRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.Port:
        violations = []
        if not request.port.name or len(request.port.name.encode()) > 15:
            violations.append(FieldViolation("port.name", "1..15 bytes (a Linux interface name)"))
        if not request.port.mac:
            violations.append(FieldViolation("port.mac", "required"))
        if not request.port.vsid:
            violations.append(FieldViolation("port.vsid", "required"))
        if request.port.backend not in vswitch_pb2.PortBackend.values():
            violations.append(FieldViolation("port.backend", f"unknown backend {request.port.backend}"))
        if request.port.backend == vswitch_pb2.PORT_BACKEND_TAP_KERNEL and request.port.netns:
            violations.append(
                FieldViolation(
                    "port.netns", "a TAP_KERNEL port stays in the agent's namespace: leave it empty"
                )
            )
        if violations:
            raise InvalidArgument("invalid port", violations)
        return self._datapath().attach_port(request.port)

    def DetachPort(
        self, request: vswitch_pb2.DetachPortRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.DetachPortResponse:
        if not request.name:
            raise InvalidArgument("invalid request", [FieldViolation("name", "required")])
        self._datapath().detach_port(request.name)
        return vswitch_pb2.DetachPortResponse()

    def ListPorts(
        self, request: vswitch_pb2.ListPortsRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.ListPortsResponse:
        datapath = self._agent.datapath
        return vswitch_pb2.ListPortsResponse(ports=list(datapath.ports()) if datapath else [])

    def GetCounters(
        self, request: vswitch_pb2.GetCountersRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.Counters:
        datapath = self._agent.datapath
        return datapath.counters() if datapath else vswitch_pb2.Counters()

    def ListExtensions(
        self, request: vswitch_pb2.ListExtensionsRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.ListExtensionsResponse:
        datapath = self._agent.datapath
        return vswitch_pb2.ListExtensionsResponse(extensions=list(datapath.extensions()) if datapath else [])

    def ConfigureExtension(
        self, request: vswitch_pb2.ConfigureExtensionRequest, context: grpc.ServicerContext
    ) -> vswitch_pb2.Extension:
        if not request.extension.name:
            raise InvalidArgument("invalid extension", [FieldViolation("extension.name", "required")])
        return self._datapath().configure_extension(request.extension)


@dataclass
class VswitchServer:
    """A running agent and its gRPC server; ``stop`` ends both (gRPC first, then the agent)."""

    grpc_server: GrpcServer
    agent: Agent
    kv: KV
    owns_kv: bool
    telemetry: Telemetry | None = None

    @property
    def port(self) -> int:
        return self.grpc_server.port

    def stop(self) -> None:
        """Forwarding stops last: everything before it (etcd, telemetry export) is not an outage."""
        self.grpc_server.stop()
        self.agent.stop(datapath=False)
        if self.owns_kv:
            self.kv.close()
        if self.telemetry is not None:
            # Exports what the batch processor still holds.
            self.telemetry.shutdown()
        self.agent.stop_datapath()


DatapathFactory = Callable[[AgentConfig], Datapath]


def default_datapath(config: AgentConfig) -> Datapath:
    """The NVGRE datapath of services/vswitch/datapath for this host."""
    from services.vswitch import datapath  # noqa: PLC0415 - table-only agents never load it

    factory: DatapathFactory = datapath.NvgreSwitch.from_agent_config
    return factory(config)


def create_server(
    config: AgentConfig,
    *,
    kv: KV | None = None,
    clock: Clock = SYSTEM_CLOCK,
    datapath_factory: DatapathFactory | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    on_failure: Callable[[BaseException], None] | None = None,
    resumed: RoutingTable | None = None,
) -> tuple[VswitchServer, int]:
    """Start the agent and its gRPC server. ``kv`` defaults to an ``EtcdKV`` on ``config.etcd`` (closed
    by ``stop``); the datapath is built unless ``config.table_only``. ``clock``: the agent's (lease
    keepalive, status rate limit, applied times). ``resumed``: the table the factory's datapath was
    already started on (``process.serve`` does that before importing this module)."""
    config.validate()
    owns_kv = kv is None
    store: KV = kv if kv is not None else EtcdKV.from_config(config.etcd_settings)
    datapath = None if config.table_only else (datapath_factory or default_datapath)(config)
    telemetry = Telemetry.start(config.telemetry)
    agent = Agent(
        config,
        store,
        datapath,
        on_failure=on_failure,
        telemetry=AgentTelemetry(telemetry.tracer, telemetry.meter, config.host_name) if telemetry else None,
        resumed=resumed,
        clock=clock,
    )

    def register(server: grpc.Server) -> None:
        vswitch_pb2_grpc.add_VswitchServiceServicer_to_server(VswitchServicer(agent), server)

    agent.start()
    try:
        built = build_server(
            config.server,
            [GRPC_SERVICE],
            register,
            [*server_interceptors(telemetry), *interceptors],
            authorization=Authorization.of_server(access.rules(config.host_name), config.server),
        )
    except BaseException:
        agent.stop()
        if telemetry is not None:
            telemetry.shutdown()
        raise
    log.info(
        "vswitch agent serving",
        extra={
            "port": built.port,
            "host": config.host_name,
            "pa": config.pa_ip,
            "table_only": config.table_only,
        },
    )
    return VswitchServer(built, agent, store, owns_kv, telemetry), built.port


__all__ = [
    "GRPC_SERVICE",
    "DatapathFactory",
    "TableOnlyError",
    "VswitchServer",
    "VswitchServicer",
    "create_server",
    "default_datapath",
]
