"""The replica demo for ``make run``: two sites, the first replicating a small demo disk to the second.

``start_demo(workdir)`` launches both sites (one replica service process each, each allowing the
other) as child processes, creates the demo VHD (once), enables replication every 30 s
(idempotently) and returns the endpoints to print. ``services.devstack`` runs it for ``make run``,
spawning the sites as its children through ``spawn``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from overland import defaults
from overland.v1 import replica_pb2, replica_pb2_grpc
from services.replica.vhd import create_dynamic, open_disk

log = logging.getLogger(__name__)

# Site A on the replica service's default address, where the CLI looks; site B beside it.
PRIMARY_ADDRESS = defaults.REPLICA.address
DR_ADDRESS = f"{defaults.LOCALHOST}:{defaults.REPLICA.port + 10}"
NBD_ADDRESS = "127.0.0.1:10809"
DR_NBD_ADDRESS = "127.0.0.1:10819"
# Where each site serves its metrics to Prometheus (site B beside site A, as its gRPC port).
PRIMARY_METRICS = defaults.REPLICA.metrics_address
DR_METRICS = f"{defaults.LOCALHOST}:{defaults.REPLICA.metrics_port + 10}"
PRIMARY_NAME = "site-a"
DR_NAME = "site-b"
VM_NAME = "demo-vm"
DISK_SIZE = 64 * 1024 * 1024
READY_SECONDS = 30.0

Spawn = Callable[[str, Sequence[str]], None]


@dataclass
class DemoHandles:
    """What the demo started, and the lines that tell a person how to use it."""

    primary: str
    dr: str
    nbd_url: str
    disk: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"Replica demo: site A ({self.primary}) replicates demo-vm to site B every 30 s:",
            "  overland replica status --watch",
            "  overland vm list                 # the VMs of site A (make guest, then overland vm new ...)",
            f"  overland replica recovery-points {VM_NAME}",
            f"  qemu-io -f raw -c 'write -P 0x42 0 1M' {self.nbd_url}   # a tracked write",
            f"  overland replica replicate-now {VM_NAME}",
            f"  site B: {self.dr} (replicas under the demo's dr-store); --endpoint {self.dr} for its VMs",
            f"  metrics: site A http://{PRIMARY_METRICS}/metrics, site B http://{DR_METRICS}/metrics",
        ]

    def stop(self) -> None:
        """Stop the children this module started (SIGTERM, then SIGKILL after a grace time)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


def service_argv(site: str, workdir: Path) -> list[str]:
    """The command line of one demo site ("a" or "b"): each allows the other, so replication can be
    reversed after a failover."""
    common = [sys.executable, "-m", "services.replica", "--vswitch-endpoint", ""]
    if site == "b":
        return [
            *common,
            *("--site-name", DR_NAME, "--bind", DR_ADDRESS, "--nbd-bind", DR_NBD_ADDRESS),
            *("--metrics-listen", DR_METRICS),
            *("--state-dir", str(workdir / "site-b"), "--allow", f"{PRIMARY_NAME}={workdir / 'dr-store'}"),
        ]
    return [
        *common,
        *("--site-name", PRIMARY_NAME, "--bind", PRIMARY_ADDRESS, "--nbd-bind", NBD_ADDRESS),
        *("--metrics-listen", PRIMARY_METRICS),
        *("--state-dir", str(workdir / "primary-state"), "--allow", f"{DR_NAME}={workdir / 'from-site-b'}"),
    ]


def start_demo(workdir: Path, spawn: Spawn | None = None) -> DemoHandles:
    """Start both sites (with ``spawn``, or as children of this process), then enable the demo VM."""
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "demo-vm-disk0.vhd"
    handles = DemoHandles(PRIMARY_ADDRESS, DR_ADDRESS, f"nbd://{NBD_ADDRESS}/{VM_NAME}/disk0", disk)

    def own_spawn(name: str, argv: Sequence[str]) -> None:
        handles.processes.append(subprocess.Popen(list(argv), env={**os.environ, "PYTHONUNBUFFERED": "1"}))

    launch = spawn or own_spawn
    if not disk.exists():
        _create_demo_disk(disk)
    try:
        launch("site-b", service_argv("b", workdir))
        launch("site-a", service_argv("a", workdir))
        for address in (DR_ADDRESS, PRIMARY_ADDRESS):
            with grpc.insecure_channel(address) as channel:
                grpc.channel_ready_future(channel).result(timeout=READY_SECONDS)
        _enable(disk)
    except Exception:
        handles.stop()
        raise
    return handles


def _create_demo_disk(disk: Path) -> None:
    """A dynamic VHD with a little content, so the initial replication has something to carry."""
    create_dynamic(disk, DISK_SIZE)
    device = open_disk(disk, writable=True)
    try:
        device.write(0, b"Overland replica demo disk\n".ljust(4096, b"\0"))
        device.write(8 * 1024 * 1024, bytes(range(256)) * 4096)
        device.flush()
    finally:
        device.close()


def _enable(disk: Path) -> None:
    with grpc.insecure_channel(PRIMARY_ADDRESS) as channel:
        stub = replica_pb2_grpc.ReplicaServiceStub(channel)
        try:
            stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name=VM_NAME), timeout=10)
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        stub.EnableReplication(
            replica_pb2.EnableReplicationRequest(
                vm=replica_pb2.VirtualMachine(
                    name=VM_NAME,
                    cpu_count=1,
                    memory_bytes=512 * 1024 * 1024,
                    disks=[{"name": "disk0", "path": str(disk)}],
                ),
                settings=replica_pb2.ReplicationSettings(
                    frequency_seconds=30,
                    additional_recovery_points=2,
                    compression_mode=replica_pb2.COMPRESSION_AUTO,
                    replica_server=DR_ADDRESS,
                ),
            ),
            timeout=30,
        )
    log.info("replica demo enabled", extra={"vm": VM_NAME, "primary": PRIMARY_ADDRESS, "dr": DR_ADDRESS})
