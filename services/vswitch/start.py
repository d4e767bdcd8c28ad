"""``python -m services.vswitch``: start an agent so that a restart forwards again as early as possible.

The datapath comes first: the configuration, then the datapath started on the saved table (snapshot.py),
and only then the modules of the etcd client, the gRPC server and telemetry, which are most of the
process's start-up time (about half a second of CPU). The agent then syncs from etcd and hands the
datapath only what changed. This module therefore imports nothing heavy at the top.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from services.common.logs import configure_logging
from services.common.table import RoutingTable
from services.vswitch.config import config_from_args, telemetry_config
from services.vswitch.snapshot import TableSnapshots, resume_forwarding

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run this host's agent until SIGINT/SIGTERM; the exit status."""
    configure_logging()
    config = config_from_args(argv, telemetry=False)
    log.info("vswitch agent starting", extra={"host": config.host_name, "table_only": config.table_only})
    datapath = None
    resumed = None
    if not config.table_only:
        # Deferred imports below: see the module docstring.
        from services.vswitch.datapath.switch import NvgreSwitch  # noqa: PLC0415

        datapath = NvgreSwitch.from_agent_config(config)
        resumed = RoutingTable()
        snapshots = TableSnapshots(Path(config.table_snapshot)) if config.table_snapshot else None
        resume_forwarding(datapath, resumed, snapshots)
    from services.common.telemetry import install_log_correlation  # noqa: PLC0415
    from services.vswitch.server import serve  # noqa: PLC0415

    install_log_correlation()
    config = replace(config, telemetry=telemetry_config(config.host_name, os.environ))
    config.validate()
    return serve(config, datapath=datapath, resumed=resumed)
