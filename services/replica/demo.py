"""The replica demo for ``make run``: a primary and a DR replica service replicating a small demo disk.

``start_demo(workdir)`` launches both roles as child processes, creates the demo VHD (once), enables
replication every 30 s (idempotently) and returns the endpoints to print. ``services.devstack`` runs
it for ``make run``, spawning the roles as its children through ``spawn``.
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

# The primary on the replica service's default address, where the CLI looks; the DR site beside it.
PRIMARY_ADDRESS = defaults.REPLICA.address
DR_ADDRESS = f"{defaults.LOCALHOST}:{defaults.REPLICA.port + 10}"
NBD_ADDRESS = "127.0.0.1:10809"
PRIMARY_NAME = "demo-primary"
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
            f"Replica demo: a primary ({self.primary}) and a DR site replicating demo-vm every 30 s:",
            "  overland replica status --watch",
            f"  overland replica recovery-points {VM_NAME}",
            f"  qemu-io -f raw -c 'write -P 0x42 0 1M' {self.nbd_url}   # a tracked write",
            f"  overland replica replicate-now {VM_NAME}",
            f"  DR site: {self.dr} (replicas under the demo's dr-store)",
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


def service_argv(role: str, workdir: Path) -> list[str]:
    """The command line of one demo role."""
    common = [sys.executable, "-m", "services.replica", "--role", role]
    if role == "dr":
        return [*common, "--bind", DR_ADDRESS, "--allow", f"{PRIMARY_NAME}={workdir / 'dr-store'}"]
    return [
        *common,
        "--bind",
        PRIMARY_ADDRESS,
        "--state-dir",
        str(workdir / "primary-state"),
        "--primary-name",
        PRIMARY_NAME,
        "--nbd-bind",
        NBD_ADDRESS,
    ]


def start_demo(workdir: Path, spawn: Spawn | None = None) -> DemoHandles:
    """Start both roles (with ``spawn``, or as children of this process), then enable the demo VM."""
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "demo-vm-disk0.vhd"
    handles = DemoHandles(PRIMARY_ADDRESS, DR_ADDRESS, f"nbd://{NBD_ADDRESS}/{VM_NAME}/disk0", disk)

    def own_spawn(name: str, argv: Sequence[str]) -> None:
        handles.processes.append(subprocess.Popen(list(argv), env={**os.environ, "PYTHONUNBUFFERED": "1"}))

    launch = spawn or own_spawn
    if not disk.exists():
        _create_demo_disk(disk)
    try:
        launch("replica-dr", service_argv("dr", workdir))
        launch("replica-primary", service_argv("primary", workdir))
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
                    compression=True,
                    replica_server=DR_ADDRESS,
                ),
            ),
            timeout=30,
        )
    log.info("replica demo enabled", extra={"vm": VM_NAME, "primary": PRIMARY_ADDRESS, "dr": DR_ADDRESS})
