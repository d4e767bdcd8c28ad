"""The policy service process: ``create_server`` wires etcd, the store and the gRPC server;
``serve``/``main`` run it until SIGINT/SIGTERM and stop it gracefully."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from overland.v1 import policy_pb2_grpc
from services.common.etcd_kv import EtcdKV
from services.common.kv import KV
from services.common.logs import configure_logging
from services.common.server import GrpcServer, build_server, wait_for_signal
from services.common.telemetry import (
    Telemetry,
    current_trace_context,
    install_log_correlation,
    server_interceptors,
)
from services.policy.config import InvalidPolicyConfig, PolicyConfig, load_config
from services.policy.service import SERVICE_NAME, PolicyServicer
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


def create_server(config: PolicyConfig, kv: KV | None = None) -> tuple[PolicyServer, int]:
    """Start the service on ``config.server.bind`` (port 0 picks one). ``kv`` replaces etcd (tests
    pass a MemoryKV); without it the service connects to ``config.etcd``."""
    config.validate()
    owns_kv = kv is None
    store_kv: KV = EtcdKV.from_config(config.etcd) if kv is None else kv
    telemetry = Telemetry.start(config.telemetry)
    # Every stored entry carries the trace of the write that stored it, so appliers join that trace.
    store = PolicyStore(store_kv, trace_context=current_trace_context) if telemetry else PolicyStore(store_kv)
    servicer = PolicyServicer(store)
    try:
        built = build_server(
            config.server,
            [SERVICE_NAME],
            lambda server: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server),
            interceptors=server_interceptors(telemetry),
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


def serve(config: PolicyConfig, stop: threading.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``), then shut down gracefully."""
    server, _port = create_server(config)
    try:
        wait_for_signal(stop)
    finally:
        log.info("policy service stopping")
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(argv)
    except InvalidPolicyConfig as error:
        # A bad configuration is the operator's to fix: say what is wrong, without a traceback.
        raise SystemExit(f"policy service: {error.message}") from error
    configure_logging(config.log_level, config.log_json)
    install_log_correlation()
    serve(config)
