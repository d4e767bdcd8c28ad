"""Two real sites (``python -m services.replica`` processes) that allow each other, for the failover
tests: site A replicates, site B keeps the replica, and either may become the other."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from overland.v1 import replica_pb2, replica_pb2_grpc, vm_pb2, vm_pb2_grpc
from services.replica.disks import nbd_unix_url
from tests.integration.replica.conftest import MiB, ServiceProcess, free_port, replicate_now

REPLICATION_TIMEOUT = 120.0


@dataclass
class Site:
    """One site process and its stubs."""

    name: str
    process: ServiceProcess
    state: Path
    # Where it keeps the replicas of the other site.
    store: Path

    @property
    def endpoint(self) -> str:
        return self.process.endpoint

    @property
    def replicas(self) -> replica_pb2_grpc.ReplicaServiceStub:
        return replica_pb2_grpc.ReplicaServiceStub(grpc.insecure_channel(self.endpoint))

    @property
    def vms(self) -> vm_pb2_grpc.VmServiceStub:
        return vm_pb2_grpc.VmServiceStub(grpc.insecure_channel(self.endpoint))

    def nbd(self, export: str) -> str:
        """The NBD URL of one of its exports, over its unix socket."""
        return nbd_unix_url(export, self.state / "nbd.sock")

    def failover(self, vm: str, **options: object) -> replica_pb2.VmFailover:
        request = replica_pb2.StartVmFailoverRequest(vm_name=vm, **options)  # type: ignore[arg-type]
        answer: replica_pb2.VmFailover = self.replicas.StartVmFailover(request, timeout=120)
        return answer

    def status(self, vm: str) -> replica_pb2.VmFailover:
        answer: replica_pb2.VmFailover = self.replicas.GetVmFailover(
            replica_pb2.GetVmFailoverRequest(vm_name=vm), timeout=10
        )
        return answer

    def replication(self, vm: str) -> replica_pb2.Replication:
        answer: replica_pb2.Replication = self.replicas.GetReplication(
            replica_pb2.GetReplicationRequest(vm_name=vm), timeout=10
        )
        return answer

    def cycle(self, vm: str) -> replica_pb2.Replication:
        """ReplicateNow, followed to the cycle's end: the replication after it."""
        return replicate_now(self.replicas, vm)

    def history(self, vm: str) -> list[replica_pb2.FailoverEvent]:
        listed = self.replicas.ListVmFailoverHistory(
            replica_pb2.ListVmFailoverHistoryRequest(vm_name=vm), timeout=10
        )
        return list(listed.events)

    def vm(self, name: str) -> vm_pb2.Vm:
        answer: vm_pb2.Vm = self.vms.GetVm(vm_pb2.GetVmRequest(name=name), timeout=10)
        return answer

    def log(self) -> str:
        return self.process.log_path.read_text()

    def console(self, vm: str) -> str:
        """The VM's console log so far, through the VM API."""
        log = self.vms.GetConsoleLog(vm_pb2.GetConsoleLogRequest(name=vm, max_bytes=1024 * 1024), timeout=10)
        return bytes(log.data).decode(errors="replace")

    def wait_console(self, vm: str, text: str, after: int = 0, seconds: float = REPLICATION_TIMEOUT) -> str:
        """The VM's console once ``text`` is in it past character ``after``; the VM must keep running."""
        deadline = time.monotonic() + seconds
        while text not in (console := self.console(vm))[after:]:
            assert self.vm(vm).state == vm_pb2.VM_STATE_RUNNING, console[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} on {vm}'s console: {console[-3000:]}"
            time.sleep(0.5)
        return console


def site(base: Path, name: str, other: str, *extra: str) -> Site:
    state, store = base / f"{name}-state", base / f"{name}-store"
    process = ServiceProcess(
        [
            *("--site-name", name, "--state-dir", str(state), "--tick", "0.2"),
            *("--allow", f"{other}={store}", "--vswitch-endpoint", "", "--host-name", f"{name}-host"),
            *extra,
        ],
        free_port(),
        base / f"{name}.log",
    )
    return Site(name, process, state, store)


def define_and_replicate(
    a: Site, b: Site, vm: str, disk: Path, *, nics: tuple[replica_pb2.VmNic, ...] = (), points: int = 0
) -> None:
    """VM ``vm`` defined at A on ``disk`` (with ``nics``), replicated to B with ``points`` hourly
    recovery points; returns once the initial copy is done."""
    machine = replica_pb2.VirtualMachine(
        name=vm, disks=[replica_pb2.VmDisk(name="d0", path=str(disk))], nics=nics
    )
    a.vms.CreateVm(vm_pb2.CreateVmRequest(vm=machine), timeout=10)
    a.replicas.EnableReplication(
        replica_pb2.EnableReplicationRequest(
            vm=replica_pb2.VirtualMachine(name=vm),
            settings=replica_pb2.ReplicationSettings(
                frequency_seconds=900, additional_recovery_points=points, replica_server=b.endpoint
            ),
        ),
        timeout=30,
    )
    wait_until(
        lambda: a.replication(vm).state == replica_pb2.REPLICATION_STATE_REPLICATING, "the initial copy"
    )


def wait_until(check: Callable[[], bool], what: str, seconds: float = REPLICATION_TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def failed(call: Callable[[], object]) -> grpc.RpcError:
    """The error ``call`` must end with."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")


def raw_of(url: str, out: Path, fmt: str = "raw") -> Path:
    """A raw copy of an image (a file, or an export over NBD) by qemu-img."""
    # -U (force share): a file a site serves holds qemu's image locks, as a running VM's would.
    shared = ["-U"] if fmt != "raw" else []
    subprocess.run(
        ["qemu-img", "convert", *shared, "-f", fmt, "-O", "raw", url, str(out)], check=True, timeout=120
    )
    return out


__all__ = ["MiB", "Site", "define_and_replicate", "failed", "raw_of", "site", "wait_until"]
