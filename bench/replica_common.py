"""Shared setup of the replica benchmarks: site processes, a DR process with an in-process primary, a
filled source disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from overland.client import ReplicaClient, VmClient
from overland.replication import wait_cycle
from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.config import ServerConfig
from services.common.etcd_process import free_ports
from services.replica.config import ReplicaConfig
from services.replica.server import ReplicaServer, create_server
from services.replica.vhd import create_fixed

MIB = 1024 * 1024
GIB = 1024 * MIB
PATTERN = 64 * MIB


# What the other half of a half-full disk holds (``fill_fixed_disk``).
FILLS = ("random", "zeroes", "text")


def text_pattern() -> bytes:
    """``PATTERN`` bytes of real text: the Python standard library's sources, as they come."""
    parts, size = [], 0
    for path in sorted(Path(os.__file__).parent.rglob("*.py")):
        data = path.read_bytes()
        parts.append(data)
        size += len(data)
        if size >= PATTERN:
            break
    return b"".join(parts)[:PATTERN].ljust(PATTERN, b"\n")


def fill_fixed_disk(path: Path, size: int, other: str = "random") -> None:
    """A fixed VHD (whose data starts at offset 0) written whole: incompressible data, every second
    ``PATTERN`` of it replaced by zeroes or text when ``other`` says so (half of the disk)."""
    create_fixed(path, size)
    block = bytearray(os.urandom(PATTERN))
    second = {"random": None, "zeroes": bytes(PATTERN), "text": text_pattern()}[other]
    fd = os.open(path, os.O_WRONLY)
    try:
        for index, offset in enumerate(range(0, size, PATTERN)):
            # Vary each copy so nothing downstream can deduplicate the pattern.
            block[:8] = index.to_bytes(8, "big")
            data = second if second is not None and index % 2 else block
            os.pwrite(fd, data[: min(PATTERN, size - offset)], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, timeout=3600)
    return time.perf_counter() - start


@dataclass
class SiteProcess:
    """A site, ``python -m services.replica``, as a child process, and the SDK's clients of it."""

    process: subprocess.Popen[bytes]
    endpoint: str
    replicas: ReplicaClient
    vms: VmClient

    @property
    def replica_stub(self) -> replica_pb2_grpc.ReplicaServiceStub:
        return replica_pb2_grpc.ReplicaServiceStub(self.replicas.channel)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        self.replicas.close()
        self.vms.close()


def start_site(
    args: Sequence[str], log: Path | None = None, env: Mapping[str, str] | None = None
) -> SiteProcess:
    """A site with ``args`` (stderr to ``log``), once it serves (it prints ``LISTENING HOST PORT ...``).
    Its port is chosen here, not by the kernel: a site tells other sites its ``--bind`` address (the
    endpoint a DR site probes and a new primary calls back), and port 0 would tell them nothing."""
    (port,) = free_ports(1)
    with open(log or os.devnull, "ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.replica", *args, "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=None if env is None else dict(env),
        )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if not line:
        process.wait(timeout=30)
        raise RuntimeError(f"the site exited with {process.returncode} before serving (log: {log})")
    endpoint = f"127.0.0.1:{int(line[2])}"
    return SiteProcess(process, endpoint, ReplicaClient(endpoint), VmClient(endpoint))


@contextmanager
def sites(workdir: Path, primary_name: str = "bench") -> Iterator[tuple[ReplicaServer, str]]:
    """A DR site as a child process and a primary in this process; yields (primary, DR endpoint)."""
    store = workdir / "dr-store"
    dr = start_site(
        ["--site-name", "dr", "--allow", f"{primary_name}={store}", "--state-dir", str(workdir / "dr-state")]
    )
    primary: ReplicaServer | None = None
    try:
        primary, _port = create_server(
            ReplicaConfig(
                server=ServerConfig(bind="127.0.0.1:0"),
                state_dir=workdir / "primary-state",
                site_name=primary_name,
            )
        )
        yield primary, dr.endpoint
    finally:
        if primary is not None:
            primary.stop()
        dr.stop()


def enable(
    primary: ReplicaServer, vm: str, disk: Path, endpoint: str, **settings: object
) -> replica_pb2_grpc.ReplicaServiceStub:
    stub = replica_pb2_grpc.ReplicaServiceStub(grpc.insecure_channel(f"127.0.0.1:{primary.port}"))
    options: dict[str, object] = {"frequency_seconds": 900, "replica_server": endpoint}
    options.update(settings)
    stub.EnableReplication(
        replica_pb2.EnableReplicationRequest(
            vm=replica_pb2.VirtualMachine(name=vm, disks=[replica_pb2.VmDisk(name="d0", path=str(disk))]),
            settings=replica_pb2.ReplicationSettings(**options),  # type: ignore[arg-type]
        )
    )
    return stub


def replicate_now(primary: ReplicaServer, vm: str) -> replica_pb2.Replication:
    """ReplicateNow followed to the cycle's end (the SDK's ``wait_cycle``): the replication after it."""
    with ReplicaClient(f"127.0.0.1:{primary.port}") as client:
        wait_cycle(client, client.replicate_now(vm_name=vm))
        return client.get_replication(vm_name=vm)


def wait_replicating(stub: replica_pb2_grpc.ReplicaServiceStub, vm: str, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        replication = stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name=vm))
        if replication.state == replica_pb2.REPLICATION_STATE_REPLICATING:
            return
        if replication.state == replica_pb2.REPLICATION_STATE_CRITICAL or time.monotonic() > deadline:
            raise RuntimeError(f"initial replication failed: {list(replication.health_reasons)}")
        time.sleep(0.02)


def same(a: Path, b: Path, fmt_b: str = "vpc") -> bool:
    """qemu-img says the two images hold the same data. ``-U``: a disk a site serves is locked as qemu
    locks it (without it, the compare fails to open it and says "different"); the caller flushed it."""
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "vpc", "-F", fmt_b, str(a), str(b)],
        capture_output=True,
        timeout=3600,
        check=False,
    )
    return done.returncode == 0
