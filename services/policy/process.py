"""``python -m services.policy``: ``main`` loads the configuration and ``serve`` runs the service
until SIGINT/SIGTERM, then stops it gracefully, in one process or as several workers sharing the port."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import threading
from collections.abc import Sequence
from dataclasses import replace

from services.common.config import ConfigError, report
from services.common.logs import configure_logging
from services.common.server import wait_for_signal
from services.common.telemetry import install_log_correlation
from services.policy.config import PolicyConfig, load_config
from services.policy.server import create_server

log = logging.getLogger(__name__)


def serve(config: PolicyConfig, stop: threading.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or ``stop``), then shut down gracefully; the exit status. With several
    workers this process supervises them instead (``serve_workers``)."""
    if config.workers > 1:
        return serve_workers(config, stop)
    server, _port = create_server(config)
    try:
        wait_for_signal(stop)
    finally:
        log.info("policy service stopping")
        server.stop()
    return 0


def _worker(config: PolicyConfig) -> None:
    """One worker process: the service on the shared port (the store is stateless between calls)."""
    configure_logging(config.log.level, config.log.json)
    install_log_correlation()
    serve(replace(config, workers=1))


def serve_workers(config: PolicyConfig, stop: threading.Event | None = None) -> int:
    """Start ``config.workers`` server processes on one port and stay until a signal (or ``stop``),
    then stop them gracefully. A worker that dies takes the others down with it, and the status is 1,
    so the supervisor above (systemd, Kubernetes) restarts the service whole."""
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
        log.error("a worker died; stopped the other workers", extra={"worker": died[0]})
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status: 0 after a clean stop, 2 for a configuration it cannot start with (one line on
    stderr, no traceback), 1 when a worker died."""
    try:
        config = load_config(argv)
    except ConfigError as error:
        return report(error, "policy service")
    configure_logging(config.log.level, config.log.json)
    install_log_correlation()
    return serve(config)
