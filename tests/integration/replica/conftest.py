"""Fixtures for replication tests: two sites, the DR site as a real process and the primary in-process
or as a process, VHD disks made by qemu-img, and helpers to drive and compare them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.config import ServerConfig
from services.replica.config import ReplicaConfig
from services.replica.server import ReplicaServer, create_server

REPO = Path(__file__).resolve().parents[3]
START_SECONDS = 20.0
# How long a test follows one cycle at most (a hung cycle fails the test instead of hanging it).
CYCLE_SECONDS = 600.0
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """``python -m services.replica`` (one site) as a child process, on a fixed port so it can be
    restarted there."""

    args: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    nbd_port: int = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.replica", *self.args, "--bind", self.endpoint],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_SECONDS
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(b"LISTENING") or not line:
                break
        if not line.startswith(b"LISTENING"):
            self.stop()
            raise RuntimeError(f"replica service did not start: {self.log_path.read_text()[-2000:]}")
        words = line.split()
        if b"nbd" in words:
            self.nbd_port = int(words[words.index(b"nbd") + 1])
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class Sites:
    """A DR site as a process ("dr", allowing "primary") and a way to start primary sites in-process
    (named "primary" unless told otherwise), all under one tmp dir."""

    base: Path
    dr: ServiceProcess
    primaries: list[ReplicaServer] = field(default_factory=list)

    @property
    def dr_store(self) -> Path:
        return self.base / "dr-store"

    def primary(self, **overrides: object) -> ReplicaServer:
        options: dict[str, object] = {
            "site_name": "primary",
            "server": ServerConfig(bind="127.0.0.1:0"),
            "state_dir": self.base / "primary-state",
            "scheduler_tick_seconds": 0.2,
        }
        options.update(overrides)
        server, _port = create_server(ReplicaConfig(**options))  # type: ignore[arg-type]
        self.primaries.append(server)
        return server


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    store = tmp_path / "dr-store"
    dr = ServiceProcess(
        ["--site-name", "dr", "--allow", f"primary={store}", "--state-dir", str(tmp_path / "dr-state")],
        free_port(),
        tmp_path / "dr.log",
    ).start()
    result = Sites(tmp_path, dr)
    try:
        yield result
    finally:
        for server in result.primaries:
            server.stop()
        dr.stop()


def make_disk(path: Path, size: int = 16 * MiB, fmt: str = "dynamic") -> Path:
    """A VHD made by qemu-img (a tool nobody here wrote)."""
    subformat = "fixed" if fmt == "fixed" else "dynamic"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            f"subformat={subformat},force_size=on",
            str(path),
            str(size),
        ],
        check=True,
        timeout=30,
    )
    return path


def qemu_io(image: str, command: str, fmt: str = "vpc") -> None:
    args = (
        ["qemu-io", "-c", command, image]
        if image.startswith("nbd://")
        else ["qemu-io", "-f", fmt, "-c", command, image]
    )
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stdout.lower(), done.stdout


def qemu_compare(
    a: Path, b: Path, fmt_a: str = "vpc", fmt_b: str = "vpc"
) -> subprocess.CompletedProcess[str]:
    # -U (force share): a disk the primary serves holds qemu's image locks, as a running VM's would.
    return subprocess.run(
        ["qemu-img", "compare", "-U", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_same(a: Path, b: Path) -> None:
    """qemu-img says the two VHDs hold the same data."""
    result = qemu_compare(a, b)
    assert result.returncode == 0, result.stdout + result.stderr


def enable_request(
    vm: str, disks: dict[str, Path], replica_server: str, **settings: object
) -> replica_pb2.EnableReplicationRequest:
    options: dict[str, object] = {"frequency_seconds": 30, "replica_server": replica_server}
    options.update(settings)
    return replica_pb2.EnableReplicationRequest(
        vm=replica_pb2.VirtualMachine(
            name=vm, disks=[replica_pb2.VmDisk(name=name, path=str(path)) for name, path in disks.items()]
        ),
        settings=replica_pb2.ReplicationSettings(**options),  # type: ignore[arg-type]
    )


def throttled(bytes_per_second: int) -> dict[str, object]:
    """Settings that keep a transfer slow enough to interrupt: a bandwidth limit, and no compression
    (the tests' pattern data compresses to almost nothing, which the limit would then barely slow)."""
    return {
        "bandwidth_limit_bytes_per_second": bytes_per_second,
        "compression_mode": replica_pb2.COMPRESSION_OFF,
    }


def primary_stub(port: int) -> replica_pb2_grpc.ReplicaServiceStub:
    return replica_pb2_grpc.ReplicaServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


class CycleFailed(Exception):
    """A cycle that ``replicate_now`` followed failed; ``code()`` and ``details()`` as a failed call's."""

    def __init__(self, cycle: replica_pb2.Cycle):
        super().__init__(f"cycle {cycle.id} failed: {cycle.error_code}: {cycle.error}")
        self.cycle = cycle

    def code(self) -> grpc.StatusCode:
        return getattr(grpc.StatusCode, self.cycle.error_code)

    def details(self) -> str:
        return self.cycle.error


def follow_cycle(stub: replica_pb2_grpc.ReplicaServiceStub, queued: replica_pb2.Cycle) -> replica_pb2.Cycle:
    """The cycle at its end, as WatchCycle reports it."""
    last = queued
    request = replica_pb2.WatchCycleRequest(vm_name=queued.vm_name, id=queued.id)
    for update in stub.WatchCycle(request, timeout=CYCLE_SECONDS):
        last = update
    assert last.state in (replica_pb2.CYCLE_STATE_SUCCEEDED, replica_pb2.CYCLE_STATE_FAILED), last
    return last


def replicate_now(stub: replica_pb2_grpc.ReplicaServiceStub, vm: str) -> replica_pb2.Replication:
    """ReplicateNow and follow the queued cycle to its end: the VM's replication after it, or
    ``CycleFailed``."""
    ended = follow_cycle(stub, stub.ReplicateNow(replica_pb2.ReplicateNowRequest(vm_name=vm), timeout=10))
    if ended.state == replica_pb2.CYCLE_STATE_FAILED:
        raise CycleFailed(ended)
    return stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name=vm), timeout=10)


def wait_for(
    check: Callable[[], replica_pb2.Replication],
    done: Callable[[replica_pb2.Replication], bool],
    seconds: float = 60,
) -> replica_pb2.Replication:
    deadline = time.monotonic() + seconds
    while True:
        replication = check()
        if done(replication):
            return replication
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last status: {replication}")
        time.sleep(0.1)


def state_name(replication: replica_pb2.Replication) -> str:
    return replica_pb2.ReplicationState.Name(replication.state).removeprefix("REPLICATION_STATE_")


def replica_disk(sites: Sites, vm: str, disk: str) -> Path:
    return sites.dr_store / vm / "disks" / f"{disk}.vhd"


def dir_usage(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) if path.exists() else 0
