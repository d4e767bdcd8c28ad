"""``python -m services.replica ...``: ``main`` loads the configuration and ``serve`` runs the site
until SIGINT/SIGTERM, then stops it gracefully (its VMs keep running: the next process adopts them)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from services.common.config import ConfigError, report
from services.common.logs import configure_logging
from services.common.server import wait_for_signal
from services.common.telemetry import install_log_correlation
from services.replica.config import ReplicaConfig, load_config
from services.replica.server import create_server

log = logging.getLogger(__name__)


def serve(config: ReplicaConfig, stop: threading.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or ``stop``), then stop gracefully; the exit status."""
    server, port = create_server(config)
    # The port line lets a parent process (tests, the demo) find a port-0 bind.
    print(f"LISTENING {config.site_name} {port} nbd {server.nbd.port}", flush=True)  # noqa: T201
    try:
        wait_for_signal(stop)
    finally:
        log.info("replica site stopping", extra={"site": config.site_name})
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status: 0 after a clean stop, 2 for a configuration it cannot start with (one line on
    stderr, no traceback)."""
    try:
        config = load_config(argv)
    except ConfigError as error:
        return report(error, "replica service")
    configure_logging(config.log.level, config.log.json)
    install_log_correlation()
    return serve(config)
