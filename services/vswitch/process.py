"""``python -m services.vswitch``: run this host's agent so that a restart forwards again as early as
possible.

The datapath comes first: ``main`` reads the configuration, then ``serve`` starts the datapath on the
saved table (snapshot.py), and only then imports the etcd client, the gRPC server and telemetry
(server.py), which are most of the process's start-up time (about half a second of CPU). The agent then
syncs from etcd and hands the datapath only what changed. This module therefore imports nothing heavy
at the top.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from services.common.config import ConfigError, report
from services.common.logs import configure_logging
from services.common.table import RoutingTable
from services.vswitch.config import AgentConfig, load_config
from services.vswitch.datapath_interface import Datapath
from services.vswitch.snapshot import TableSnapshots, resume_forwarding

log = logging.getLogger(__name__)


def resume(config: AgentConfig) -> tuple[Datapath | None, RoutingTable | None]:
    """The datapath, forwarding on the saved table, and that table (None, None when table-only)."""
    if config.table_only:
        return None, None
    # Deferred: a table-only agent never loads the datapath.
    from services.vswitch.datapath.switch import NvgreSwitch  # noqa: PLC0415

    datapath = NvgreSwitch.from_agent_config(config)
    resumed = RoutingTable()
    snapshots = TableSnapshots(Path(config.table_snapshot)) if config.table_snapshot else None
    resume_forwarding(datapath, resumed, snapshots)
    return datapath, resumed


def serve(config: AgentConfig, stop: threading.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM, ``stop`` or a failed watch loop; the exit status (1 after a failed
    watch loop). The datapath forwards before the heavy imports (see the module docstring)."""
    datapath, resumed = resume(config)
    # Deferred imports below: see the module docstring.
    from services.common.server import wait_for_signal  # noqa: PLC0415
    from services.common.telemetry import install_log_correlation  # noqa: PLC0415
    from services.vswitch.server import create_server  # noqa: PLC0415

    install_log_correlation()
    event = stop or threading.Event()
    failed: list[BaseException] = []

    def on_failure(error: BaseException) -> None:
        failed.append(error)
        event.set()

    factory = None if datapath is None else lambda _config: datapath
    server, _port = create_server(config, on_failure=on_failure, datapath_factory=factory, resumed=resumed)
    try:
        wait_for_signal(event)
    finally:
        server.stop()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status: 0 after a clean stop, 2 for a configuration it cannot start with (one line on
    stderr, no traceback), 1 after a failed watch loop."""
    try:
        config = load_config(argv)
    except ConfigError as error:
        return report(error, "vswitch agent")
    configure_logging(config.log.level, config.log.json)
    log.info("vswitch agent starting", extra={"host": config.host_name, "table_only": config.table_only})
    return serve(config)
