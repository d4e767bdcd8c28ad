"""The VMs of a site (the "Hyper-V host" role): define, start, stop, list and remove VMs on qemu, read
their consoles, and find them again after a restart.

Each VM has a folder ``<state>/vms/<id>/``: its record (``vm.json``), its run record while qemu runs
(``qemu.pid``), its console log, qemu's messages and its QMP socket. A VM is OFF, STARTING, RUNNING
or STOPPING. Starting one makes its NICs' ports (``ports``), opens its disks through the site's disk
owner (qemu reaches them over the NBD export's unix socket) and runs qemu; the disks are let go of
when qemu exits, however it exits (a monitor thread notices a guest that powered itself off).

qemu outlives the site process: a site that restarts finds each VM's run record, adopts the qemu it
names if it still runs (by process id and start time, then through its QMP socket) and reports the
VM OFF otherwise. qemu's NBD client waits for the restarted export and sends its requests again.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from overland.v1 import replica_pb2, vm_pb2
from services.common.errors import FieldViolation
from services.replica.config import VmRuntimeConfig
from services.replica.disks import DiskOwned, SiteDisk, SiteDisks, export_name
from services.replica.vm.accel import detect_accel
from services.replica.vm.definition import (
    NetworkSettings,
    VmDefinition,
    port_name,
    validate_vm,
    vm_spec,
)
from services.replica.vm.errors import (
    GuestImageMissing,
    InvalidVmSpec,
    QemuFailed,
    VmAlreadyRunning,
    VmExists,
    VmInUse,
    VmLocked,
    VmNotFound,
    VmNotOff,
    VmNotRunning,
    VmTimeout,
)
from services.replica.vm.network import kernel_command_line
from services.replica.vm.ports import PortRequest, Ports
from services.replica.vm.process import VmProcess, identity_of
from services.replica.vm.qemu import Accel, VmSpec
from services.replica.vm.records import RECORD_FILE, RUN_FILE, RunRecord, VmRecord

log = logging.getLogger(__name__)

# What the disk owner knows a running VM's hold on its disks by.
DISK_USER = "vm"
DEFAULT_STOP_SECONDS = 120.0
MONITOR_SECONDS = 0.5
CONSOLE_CHUNK = 64 * 1024
MAX_CONSOLE_CHUNK = 1024 * 1024
# Folder names: the first 12 hex digits of the VM's id (short, for the QMP socket's path).
DIRECTORY_DIGITS = 12


class RunState(enum.IntEnum):
    """A VM's state (values of ``overland.v1.VmState``)."""

    OFF = 1
    STARTING = 2
    RUNNING = 3
    STOPPING = 4


class ReplicationMode(enum.IntEnum):
    """A VM's replication mode at this site (values of ``overland.v1.ReplicationMode``)."""

    NONE = 1
    PRIMARY = 2
    REPLICA = 3


@dataclass
class HostedVm:
    """One VM of the site. ``op`` serializes its transitions; readers look without it."""

    record: VmRecord
    definition: VmDefinition
    directory: Path
    state: RunState = RunState.OFF
    process: VmProcess | None = None
    run: RunRecord | None = None
    disks: list[SiteDisk] = field(default_factory=list)
    op: threading.Lock = field(default_factory=threading.Lock)
    # Set when a turn-off pulls the plug under a graceful stop, so the stop is recorded as such.
    turning_off: bool = False
    deleted: bool = False

    @property
    def name(self) -> str:
        return self.definition.name


def guest_files(image: Path) -> tuple[Path, Path]:
    """The kernel and initramfs of the guest image in folder ``image`` (``make guest``'s manifest)."""
    try:
        manifest = json.loads((image / "manifest.json").read_text())
        kernel, initrd = image / Path(manifest["kernel"]).name, image / Path(manifest["initrd"]).name
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise GuestImageMissing(f"no guest image at {image} ({error}): 'make guest' builds one") from None
    for path in (kernel, initrd):
        if not path.is_file():
            raise GuestImageMissing(f"the guest image at {image} has no {path.name}: run 'make guest'")
    return kernel, initrd


def describe_exit(code: int | None) -> str:
    if code is None:
        return "qemu exited (adopted after a site restart: its exit code is unknown)"
    if code == 0:
        return "the guest powered off"
    if code < 0:
        return f"qemu was killed by signal {-code}"
    return f"qemu exited with {code}"


class VmHost:
    """Every VM of a site. Thread-safe: each VM's transitions are serialized, VMs run side by side."""

    def __init__(
        self,
        root: Path,
        config: VmRuntimeConfig,
        disks: SiteDisks,
        ports: Ports,
        *,
        accel_cache: Path,
        replicated: Callable[[str], bool] = lambda _name: False,
    ):
        self.root = root
        self.config = config
        self._disks = disks
        self._ports = ports
        self._accel_cache = accel_cache
        # Whether the site replicates a VM (is its primary): the replication manager knows.
        self.replicated = replicated
        self._vms: dict[str, HostedVm] = {}
        self._lock = threading.Lock()
        self._accel: Accel | None = None if config.accel == "auto" else Accel(config.accel)
        self._accel_lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self._load()

    # ---- lifecycle -------------------------------------------------------------------------------

    def start_monitor(self) -> None:
        """Start watching the running VMs (a guest may power itself off)."""
        self._monitor = threading.Thread(target=self._watch, name="vm-monitor", daemon=True)
        self._monitor.start()

    def close(self) -> None:
        """Stop watching and let go of every VM's disks and QMP connection. The VMs keep running: a
        restarted site adopts them."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=10)
        for vm in self.vms():
            with vm.op:
                if vm.process is not None:
                    vm.process.release()
                self._release_disks(vm)
        self._ports.close()

    # ---- persistence and adoption ------------------------------------------------------------------

    def _load(self) -> None:
        for path in sorted(self.root.glob(f"*/{RECORD_FILE}")):
            record = VmRecord.decode(path.read_bytes(), path)
            vm = HostedVm(record, validate_vm(record.config), path.parent)
            self._vms[vm.name] = vm
            try:
                self._claim_disks(vm.definition)
            except DiskOwned as error:
                # State from before a disk file had one owner: say so, and let the site start.
                log.error("disk owned by another VM", extra={"vm": vm.name, "error": error.message})
            self._adopt(vm)

    def _adopt(self, vm: HostedVm) -> None:
        run_file = vm.directory / RUN_FILE
        if not run_file.exists():
            return
        run = RunRecord.decode(run_file.read_bytes(), run_file)
        # qemu already runs: the spec only names the VM and its kernel command line.
        spec = VmSpec(vm.name, Path("/"), Path("/"), run.append)
        process = VmProcess.adopt(
            spec, vm.directory, Accel(run.accel), run.identity, netns=self.config.netns or None
        )
        if process is None:
            run_file.unlink()
            self._record_stop(vm, "qemu exited while the site was down")
            return
        self._open_disks(vm)
        vm.process, vm.run, vm.state = process, run, RunState.RUNNING
        log.info("VM adopted", extra={"vm": vm.name, "pid": run.identity.pid})

    def _record_stop(self, vm: HostedVm, how: str) -> None:
        vm.record.last_stop = how
        vm.record.save(vm.directory)

    # ---- definitions -----------------------------------------------------------------------------

    def create(
        self,
        config: replica_pb2.VirtualMachine,
        *,
        network: NetworkSettings = NetworkSettings.PRIMARY,
        replica: bool = False,
        locked_reason: str = "",
    ) -> HostedVm:
        """New-VM: define ``config`` here, off. (``network``, ``replica`` and ``locked_reason`` are
        for failover, which defines VMs of its own.)"""
        definition = validate_vm(config)
        stored = normalized(config, definition)
        with self._lock:
            if definition.name in self._vms:
                raise VmExists(f"VM {definition.name!r} already exists at this site")
            self._check_disks(definition)
            self._claim_disks(definition)
            vm_id = self._new_id()
            directory = self.root / vm_id[:DIRECTORY_DIGITS]
            directory.mkdir(parents=True)
            record = VmRecord(vm_id, stored, time.time_ns(), network, replica, locked_reason)
            vm = HostedVm(record, validate_vm(stored), directory)
            try:
                record.save(directory)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                self._unclaim_disks(definition)
                raise
            self._vms[vm.name] = vm
        log.info("VM created", extra={"vm": vm.name, "id": vm_id})
        return vm

    def _check_disks(self, definition: VmDefinition) -> None:
        found = []
        for index, disk in enumerate(definition.disks):
            where = f"vm.disks[{index}].path"
            if not disk.path.is_file():
                found.append(FieldViolation(where, f"{disk.path}: no such disk file"))
        if found:
            raise InvalidVmSpec("; ".join(f"{v.field}: {v.description}" for v in found), found)

    def _claim_disks(self, definition: VmDefinition) -> None:
        """The VM's disk files are its own (``DiskOwned`` if another VM's, by any path to them)."""
        self._disks.claim_all(definition.name, [(d.name, d.path) for d in definition.disks], DISK_USER)

    def _unclaim_disks(self, definition: VmDefinition) -> None:
        for disk in definition.disks:
            self._disks.unclaim(definition.name, disk.name, DISK_USER)

    def _new_id(self) -> str:
        taken = {vm.record.id[:DIRECTORY_DIGITS] for vm in self._vms.values()}
        while True:
            vm_id = uuid.uuid4().hex
            # Ports are named by the first 8 digits, folders by the first 12: both must be unique.
            if not any(t.startswith(vm_id[:8]) for t in taken) and not (self.root / vm_id[:12]).exists():
                return vm_id

    def get(self, name: str) -> HostedVm:
        with self._lock:
            vm = self._vms.get(name)
        if vm is None:
            raise VmNotFound(f"no VM named {name!r} at this site")
        return vm

    def vms(self) -> list[HostedVm]:
        with self._lock:
            return sorted(self._vms.values(), key=lambda vm: vm.name)

    def definition_of(self, name: str) -> replica_pb2.VirtualMachine | None:
        """The definition of VM ``name`` if it is defined here (replication completes from it)."""
        with self._lock:
            vm = self._vms.get(name)
        return vm.record.config if vm is not None else None

    def set_lock(self, name: str, reason: str, *, require_off: bool = False) -> HostedVm:
        """Lock VM ``name`` against starting (``reason`` says why) or, with ``""``, unlock it.
        ``require_off``: only if it is off (checked and locked at once: nobody starts it between)."""
        vm = self.get(name)
        with vm.op:
            if require_off and vm.state is not RunState.OFF:
                raise VmNotOff(f"VM {name!r} is {vm.state.name.lower()}: stop it first")
            vm.record.locked_reason = reason
            vm.record.save(vm.directory)
        return vm

    def redefine(
        self,
        name: str,
        config: replica_pb2.VirtualMachine | None = None,
        *,
        replica: bool | None = None,
        locked_reason: str | None = None,
        network: NetworkSettings | None = None,
    ) -> HostedVm:
        """Failover's changes of a VM: its definition (the same disks by name, at other paths: the
        failover switched their exports), whether it is a replica, its lock, the settings it runs
        with. The VM may run; the network settings apply from its next start."""
        vm = self.get(name)
        with vm.op:
            if config is not None:
                definition = validate_vm(config)
                if [d.name for d in definition.disks] != [d.name for d in vm.definition.disks]:
                    raise InvalidVmSpec(
                        f"VM {name!r} keeps its disks' names", [FieldViolation("vm.disks", "renamed")]
                    )
                # The disk files it claims follow its definition (the new ones first: all or none).
                self._claim_disks(definition)
                for before, after in zip(vm.definition.disks, definition.disks, strict=True):
                    if before.path != after.path:
                        self._disks.unclaim_file(name, before.name, before.path, DISK_USER)
                vm.record.config = normalized(config, definition)
                vm.definition = validate_vm(vm.record.config)
            if replica is not None:
                vm.record.replica = replica
            if locked_reason is not None:
                vm.record.locked_reason = locked_reason
            if network is not None:
                vm.record.network = network
            vm.record.save(vm.directory)
        return vm

    def delete(self, name: str, delete_disks: bool = False) -> HostedVm:
        """Remove-VM: the VM must be off; its ports go, its disks too if asked."""
        vm = self.get(name)
        with vm.op:
            if vm.state is not RunState.OFF:
                raise VmNotOff(f"VM {name!r} is {vm.state.name.lower()}: stop it first")
            if self.replicated(name):
                raise VmInUse(f"replication is enabled for VM {name!r}: disable it first")
            for index in range(len(vm.definition.nics)):
                self._ports.remove(port_name(vm.record.id, index))
            if delete_disks:
                for disk in vm.definition.disks:
                    if self._disks.get(export_name(name, disk.name)) is not None:
                        raise VmInUse(f"disk {disk.name!r} of VM {name!r} is still open at this site")
                for disk in vm.definition.disks:
                    disk.path.unlink(missing_ok=True)
            with self._lock:
                self._vms.pop(name, None)
            self._unclaim_disks(vm.definition)
            vm.deleted = True
            shutil.rmtree(vm.directory, ignore_errors=True)
        log.info("VM deleted", extra={"vm": name, "disks_deleted": delete_disks})
        return vm

    # ---- running ---------------------------------------------------------------------------------

    def start(self, name: str) -> HostedVm:
        """Start-VM: returns once qemu runs the VM."""
        vm = self.get(name)
        with vm.op:
            if vm.deleted:
                raise VmNotFound(f"no VM named {name!r} at this site")
            if vm.state is not RunState.OFF:
                raise VmAlreadyRunning(f"VM {name!r} is {vm.state.name.lower()}")
            if vm.record.locked_reason:
                raise VmLocked(f"VM {name!r} is locked: {vm.record.locked_reason}")
            vm.state = RunState.STARTING
            try:
                self._start_locked(vm)
            except BaseException:
                if vm.process is not None and vm.process.is_running():
                    vm.process.kill()
                vm.process = None
                self._release_disks(vm)
                vm.state = RunState.OFF
                raise
        log.info("VM started", extra={"vm": name, "pid": vm.process.pid if vm.process else None})
        return vm

    def _start_locked(self, vm: HostedVm) -> None:
        kernel, initrd = guest_files(self.config.guest_image)
        accel = self._accelerator(kernel, initrd)
        which = vm.record.network
        ports = [port_name(vm.record.id, index) for index in range(len(vm.definition.nics))]
        mtus = [
            self._ports.ensure(PortRequest(port, nic.mac, nic.port_vsid(which), vm.name))
            for nic, port in zip(vm.definition.nics, ports, strict=True)
        ]
        self._open_disks(vm)
        spec = vm_spec(
            vm.definition,
            kernel=kernel,
            initrd=initrd,
            disk_urls=[self._disks.url(disk.name) for disk in vm.disks],
            ports=ports,
            which=which,
            mtus=mtus,
        )
        process = VmProcess(spec, vm.directory, accel, netns=self.config.netns or None)
        vm.process = process
        process.start()
        identity = process.identity()
        if identity is None:
            raise QemuFailed(f"qemu of VM {vm.name!r} exited as it started: {process.qemu_messages()}")
        vm.run = RunRecord(identity, time.time_ns(), accel.value, spec.append)
        vm.run.save(vm.directory)
        vm.state = RunState.RUNNING

    def _accelerator(self, kernel: Path, initrd: Path) -> Accel:
        with self._accel_lock:
            if self._accel is None:
                self._accel = detect_accel(kernel, initrd, self._accel_cache)
            return self._accel

    def _open_disks(self, vm: HostedVm) -> None:
        for disk in vm.definition.disks:
            vm.disks.append(self._disks.open(export_name(vm.name, disk.name), disk.path, DISK_USER, disk.fmt))

    def _release_disks(self, vm: HostedVm) -> None:
        for disk in vm.disks:
            self._disks.release(disk, DISK_USER)
        vm.disks.clear()

    def _finish(self, vm: HostedVm, how: str) -> None:
        """qemu has exited: let go of the disks, forget the run, record how it ended."""
        self._release_disks(vm)
        (vm.directory / RUN_FILE).unlink(missing_ok=True)
        vm.run = None
        vm.state = RunState.OFF
        self._record_stop(vm, how)
        log.info("VM stopped", extra={"vm": vm.name, "how": how})

    def stop(self, name: str, turn_off: bool = False, timeout: float = DEFAULT_STOP_SECONDS) -> HostedVm:
        """Stop-VM: ACPI shutdown within ``timeout`` (else ``VmTimeout``, the VM keeps running), or
        ``turn_off``: power off at once, also under a graceful stop that is waiting."""
        vm = self.get(name)
        if turn_off:
            return self._turn_off(vm)
        with vm.op:
            process = self._running(vm)
            vm.state = RunState.STOPPING
            try:
                process.stop(timeout)
            except (VmTimeout, VmNotRunning, QemuFailed):
                if process.is_running():
                    vm.state = RunState.RUNNING
                    raise
            self._finish(vm, "turned off" if vm.turning_off else "shut down")
        return vm

    def _running(self, vm: HostedVm) -> VmProcess:
        if vm.state is RunState.OFF or vm.process is None:
            raise VmNotRunning(f"VM {vm.name!r} is off")
        return vm.process

    def _turn_off(self, vm: HostedVm) -> HostedVm:
        if not vm.op.acquire(blocking=False):
            # A graceful stop (or a start) holds the VM: pull the plug under a stop, wait for a start.
            run = vm.run
            if (
                vm.state is RunState.STOPPING
                and run is not None
                and identity_of(run.identity.pid) == run.identity
            ):
                vm.turning_off = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.identity.pid, signal.SIGKILL)
            vm.op.acquire()
        try:
            if vm.state is RunState.OFF and vm.turning_off:
                return vm
            process = self._running(vm)
            process.hard_stop()
            self._finish(vm, "turned off")
        finally:
            vm.turning_off = False
            vm.op.release()
        return vm

    def _watch(self) -> None:
        while not self._stop.wait(MONITOR_SECONDS):
            for vm in self.vms():
                if vm.state is not RunState.RUNNING or not vm.op.acquire(blocking=False):
                    continue
                try:
                    process = vm.process
                    if vm.state is RunState.RUNNING and process is not None and not process.is_running():
                        self._finish(vm, describe_exit(process.exit_code))
                except Exception:
                    # The monitor's own top: nobody above would see it, and it must go on watching.
                    log.exception("VM monitor failed", extra={"vm": vm.name})
                finally:
                    vm.op.release()

    # ---- views -----------------------------------------------------------------------------------

    def console(self, name: str, offset: int, max_bytes: int = 0) -> vm_pb2.ConsoleLog:
        """The console log of VM ``name`` from ``offset``, at most ``max_bytes`` (0: 64 KiB)."""
        vm = self.get(name)
        limit = min(max_bytes or CONSOLE_CHUNK, MAX_CONSOLE_CHUNK)
        try:
            with (vm.directory / "console.log").open("rb") as log_file:
                size = os.fstat(log_file.fileno()).st_size
                start = min(offset, size)
                log_file.seek(start)
                data = log_file.read(limit)
        except FileNotFoundError:
            size, start, data = 0, 0, b""
        return vm_pb2.ConsoleLog(data=data, offset=start, next_offset=start + len(data), size=size)

    def mode(self, vm: HostedVm) -> ReplicationMode:
        if self.replicated(vm.name):
            return ReplicationMode.PRIMARY
        return ReplicationMode.REPLICA if vm.record.replica else ReplicationMode.NONE

    def to_proto(self, vm: HostedVm) -> vm_pb2.Vm:
        run = vm.run if vm.state is not RunState.OFF else None
        which = vm.record.network
        return vm_pb2.Vm(
            config=vm.record.config,
            id=vm.record.id,
            state=vm_pb2.VmState.Name(int(vm.state)),
            replication_mode=vm_pb2.ReplicationMode.Name(int(self.mode(vm))),
            locked_reason=vm.record.locked_reason,
            network_settings=vm_pb2.VmNetworkSettings.Name(int(which)),
            create_time_unix_nanos=vm.record.created_nanos,
            start_time_unix_nanos=run.started_nanos if run else 0,
            pid=run.identity.pid if run else 0,
            accelerator=run.accel if run else "",
            ports=[port_name(vm.record.id, index) for index in range(len(vm.definition.nics))],
            last_stop=vm.record.last_stop,
            kernel_command_line=run.append if run else kernel_command_line(vm.definition.network(which)),
        )


def normalized(config: replica_pb2.VirtualMachine, definition: VmDefinition) -> replica_pb2.VirtualMachine:
    """``config`` as the site keeps it: defaults filled in, MACs lower-case, disk paths normalized."""
    stored = replica_pb2.VirtualMachine()
    stored.CopyFrom(config)
    stored.cpu_count = definition.cpus
    stored.memory_bytes = definition.memory_mib * 1024 * 1024
    for disk, checked in zip(stored.disks, definition.disks, strict=True):
        disk.path = str(checked.path)
    for nic, checked_nic in zip(stored.nics, definition.nics, strict=True):
        nic.mac = checked_nic.mac
    return stored
