"""``python -m services.vswitch.datapath``: run the datapath alone on a static table (benches, demos).

The table is a serialized ``overland.v1.DumpTableResponse`` (what an agent's ``DumpTable`` returns), so
a host can forward on a frozen copy of another agent's table without etcd. Ports are given as
``NAME,MAC,VSID[,NETNS]``. Runs until SIGINT/SIGTERM; ``--ready-file`` is written once forwarding runs.
With telemetry configured by the environment (services/common/telemetry.py) the table load is a span and
the datapath counters are exported as metrics; nothing is traced per packet.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from overland.defaults import DATAPATH_OTEL_NAME
from overland.v1 import vswitch_pb2
from services.common.config import telemetry_from_env
from services.common.errors import ServiceError
from services.common.logs import configure_logging
from services.common.schema import StoreEntry, key_of, wrap
from services.common.server import wait_for_signal
from services.common.table import RoutingTable
from services.common.telemetry import Telemetry
from services.vswitch.datapath.config import DatapathConfig
from services.vswitch.datapath.errors import DatapathConfigError
from services.vswitch.datapath.switch import NvgreSwitch
from services.vswitch.telemetry import AgentProbes, AgentTelemetry

log = logging.getLogger("services.vswitch.datapath")


def entries_of_dump(dump: vswitch_pb2.DumpTableResponse) -> dict[bytes, StoreEntry]:
    """A dumped table as the snapshot ``RoutingTable.reset`` takes."""
    entries = [
        *(wrap(resource) for resource in dump.provider_addresses),
        *(wrap(resource) for resource in dump.routing_domains),
        *(wrap(resource) for resource in dump.virtual_subnets),
        *(wrap(resource) for resource in dump.lookup_records),
        *(wrap(resource) for resource in dump.customer_routes),
    ]
    return {key_of(entry): entry for entry in entries}


def parse_port(text: str) -> vswitch_pb2.Port:
    fields = text.split(",")
    if len(fields) not in (3, 4) or not fields[2].isdigit():
        raise DatapathConfigError(f"--port wants NAME,MAC,VSID[,NETNS], got {text!r}")
    return vswitch_pb2.Port(
        name=fields[0], mac=fields[1], vsid=int(fields[2]), netns=fields[3] if len(fields) == 4 else ""
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.vswitch.datapath", description=__doc__)
    parser.add_argument("--pa-ip", required=True)
    parser.add_argument("--pa-mtu", type=int, default=0, help="0: the MTU of the PA's interface")
    parser.add_argument("--table", required=True, type=Path, help="a serialized DumpTableResponse")
    parser.add_argument("--port", action="append", default=[], help="NAME,MAC,VSID[,NETNS]")
    parser.add_argument("--no-offload", action="store_true", help="TAPs without virtio-net header/TSO")
    parser.add_argument(
        "--partial-checksums", action="store_true", help="leave offloaded inner checksums partial on the wire"
    )
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    configure_logging()
    telemetry = Telemetry.start(telemetry_from_env(os.environ, DATAPATH_OTEL_NAME, args.pa_ip))
    try:
        config = DatapathConfig(
            pa_ip=args.pa_ip,
            pa_mtu=args.pa_mtu,
            offload=not args.no_offload,
            complete_checksums=not args.partial_checksums,
        )
        datapath = NvgreSwitch(config)
        table = RoutingTable()
        dump = vswitch_pb2.DumpTableResponse.FromString(args.table.read_bytes())
        traced = AgentTelemetry(telemetry.tracer, telemetry.meter, args.pa_ip) if telemetry else None
        if traced is not None:
            traced.observe(AgentProbes(lambda: (table.revision, table.revision), datapath.counters))
        delta = table.reset(entries_of_dump(dump), dump.applied_revision)
        with traced.applying(delta, table.change_revision, time.time_ns) if traced else nullcontext():
            datapath.apply(table, delta)
        datapath.start()
        for text in args.port:
            datapath.attach_port(parse_port(text))
    except (ServiceError, OSError) as error:
        log.error("datapath not started: %s", error)
        return 2
    if args.ready_file:
        args.ready_file.write_text("ready\n")
    try:
        wait_for_signal()
    finally:
        datapath.stop()
        if telemetry is not None:
            telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
