"""The policy service process: ``create_server`` wires etcd, the store and the gRPC server;
``serve``/``main`` run it until SIGINT/SIGTERM and stop it gracefully, in one process or as several
workers sharing the port."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

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
    """Run until SIGINT/SIGTERM (or ``stop``), then shut down gracefully. With several workers this
    process supervises them instead (``serve_workers``)."""
    if config.workers > 1:
        serve_workers(config, stop)
        return
    server, _port = create_server(config)
    try:
        wait_for_signal(stop)
    finally:
        log.info("policy service stopping")
        server.stop()


def _worker(config: PolicyConfig) -> None:
    """One worker process: the service on the shared port (the store is stateless between calls)."""
    configure_logging(config.log_level, config.log_json)
    install_log_correlation()
    serve(replace(config, workers=1))


def serve_workers(config: PolicyConfig, stop: threading.Event | None = None) -> None:
    """Start ``config.workers`` server processes on one port and stay until a signal (or ``stop``),
    then stop them gracefully. A worker that dies takes the others down with it, and this process
    exits non-zero, so the supervisor above (systemd, Kubernetes) restarts the service whole."""
    # Spawned, not forked: a forked child would inherit this process's gRPC and etcd state.
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(config,), name=f"policy-worker-{n}")
        for n in range(config.workers)
    ]
    event = stop or threading.Event()
    died: list[str] = []

    def watch(worker: multiprocessing.process.BaseProcess) -> None:
        worker.join()
        # A worker that stopped cleanly got the signal too (a terminal's Ctrl-C reaches the group).
        if not event.is_set() and worker.exitcode != 0:
            died.append(f"{worker.name} exited with {worker.exitcode}")
        event.set()

    for worker in workers:
        worker.start()
        threading.Thread(target=watch, args=(worker,), daemon=True).start()
    log.info("policy service workers started", extra={"workers": config.workers, "bind": config.server.bind})
    try:
        wait_for_signal(event)
    finally:
        event.set()
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join(config.server.grace_seconds + 5)
            if worker.is_alive():
                worker.kill()
                worker.join()
    if died:
        raise SystemExit(f"policy service: {died[0]}; stopped the other workers")


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(argv)
    except InvalidPolicyConfig as error:
        # A bad configuration is the operator's to fix: say what is wrong, without a traceback.
        raise SystemExit(f"policy service: {error.message}") from error
    configure_logging(config.log_level, config.log_json)
    install_log_correlation()
    serve(config)
