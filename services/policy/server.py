"""The policy service's wiring: ``create_server`` connects etcd, the store and the gRPC server
(``process.py`` runs it as a process)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from overland.v1 import policy_pb2_grpc
from services.common.access import Authorization
from services.common.clock import SYSTEM_CLOCK, Clock
from services.common.etcd_kv import EtcdKV
from services.common.kv import KV, WatchBacklog
from services.common.server import GrpcServer, build_server
from services.common.telemetry import Telemetry, current_trace_context, server_interceptors
from services.policy.access import RULES
from services.policy.config import PolicyConfig
from services.policy.service import GRPC_SERVICE, PolicyServicer
from services.policy.store import PolicyStore

log = logging.getLogger(__name__)


@dataclass
class PolicyServer:
    """A running policy service. ``stop`` drains calls, then closes the etcd client it opened."""

    grpc: GrpcServer
    store: PolicyStore
    owns_kv: bool
    telemetry: Telemetry | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    def stop(self) -> None:
        self.grpc.stop()
        if self.owns_kv:
            self.store.kv.close()
        if self.telemetry is not None:
            # Exports what the batch processor still holds.
            self.telemetry.shutdown()


def create_server(
    config: PolicyConfig, *, kv: KV | None = None, clock: Clock = SYSTEM_CLOCK
) -> tuple[PolicyServer, int]:
    """Start the service on ``config.server.bind`` (port 0 picks one). ``kv`` replaces etcd (tests
    pass a MemoryKV); without it the service connects to ``config.etcd``. ``clock`` stamps the write
    time of every stored entry."""
    config.validate()
    owns_kv = kv is None
    store_kv: KV = EtcdKV.from_config(config.etcd) if kv is None else kv
    telemetry = Telemetry.start(config.telemetry)
    # Every stored entry carries the trace of the write that stored it, so appliers join that trace.
    store = (
        PolicyStore(store_kv, clock=clock.time_ns, trace_context=current_trace_context)
        if telemetry
        else PolicyStore(store_kv, clock=clock.time_ns)
    )
    servicer = PolicyServicer(
        store, watch_backlog=WatchBacklog(config.watch_backlog_bytes, config.watch_stall_seconds)
    )
    try:
        built = build_server(
            config.server,
            [GRPC_SERVICE],
            lambda server: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server),
            interceptors=server_interceptors(telemetry),
            authorization=Authorization.of_server(RULES, config.server),
        )
    except BaseException:
        if owns_kv:
            store_kv.close()
        if telemetry is not None:
            telemetry.shutdown()
        raise
    log.info(
        "policy service listening",
        extra={
            "port": built.port,
            "etcd": ",".join(config.etcd.endpoints),
            "etcd_timeout": config.etcd.timeout,
        },
    )
    return PolicyServer(built, store, owns_kv, telemetry), built.port
