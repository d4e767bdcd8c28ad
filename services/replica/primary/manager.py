"""The replications a site is the primary of: management (enable, pause, resume, resync, disable), their
tracked disks, and the scheduler that decides when each VM's next cycle runs.

Each VM's disks come from the site's disk owner (``services.replica.disks``), which serves them over
NBD; enabling replication wraps each with change tracking (a ``TrackedDevice`` whose log sits under
the state directory) behind the VM's write gate, so every write through the export, a running VM's
included, is tracked. A scheduler thread starts a cycle for each VM whose interval is due;
``cycle.run`` runs it, phase by phase, and records its outcome in the VM's ``states.Record``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from overland.v1 import replica_pb2
from services.common.errors import ServiceError
from services.replica import states
from services.replica.config import PRIMARY_HEADER, ReplicaConfig
from services.replica.disks import SiteDisk, SiteDisks, export_name
from services.replica.errors import InvalidTransition, ReplicationExists, ReplicationNotFound
from services.replica.locks import WriteGate
from services.replica.primary import cycle, replication
from services.replica.primary.gate import GatedDevice
from services.replica.primary.replication import VmReplication
from services.replica.primary.sender import RPC_SECONDS, Sender, channel_to
from services.replica.primary.tracking import DEFAULT_TRACK_BLOCK, ChangeLog, TrackedDevice
from services.replica.settings import complete_vm, disk_format, validate_enable
from services.replica.states import Event, Record, ReplicationState
from services.replica.telemetry import ReplicaTelemetry

log = logging.getLogger(__name__)

ChannelFactory = Any  # Callable[[str], grpc.Channel]; Any so tests may pass intercepted channels
# The definition of a VM that runs at this site, if one does (the VM runtime's), by name.
VmDefinitions = Callable[[str], replica_pb2.VirtualMachine | None]
MAX_CONCURRENT_CYCLES = 4
IMPORT_POLL_SECONDS = 5.0
# What the disk owner knows the replication's hold on a disk by.
DISK_USER = "replication"


class ReplicationManager:
    """All replications of this primary. Thread-safe; ``start`` runs the scheduler, ``close`` stops it."""

    def __init__(
        self,
        config: ReplicaConfig,
        channel_factory: ChannelFactory | None = None,
        disks: SiteDisks | None = None,
        telemetry: ReplicaTelemetry | None = None,
        definitions: VmDefinitions | None = None,
    ):
        self.config = config
        self._site_disks = disks or SiteDisks()
        self._definitions = definitions or (lambda _name: None)
        self._telemetry = telemetry or ReplicaTelemetry(None)
        self.root = config.state_dir / "primary"
        self.root.mkdir(parents=True, exist_ok=True)
        self._channel_factory = channel_factory or self._channel
        self._vms: dict[str, VmReplication] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set to run the scheduler now (enable, resume, resync) instead of at its next tick.
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CYCLES, thread_name_prefix="cycle")
        self._scheduler: threading.Thread | None = None
        self._channels: dict[str, grpc.Channel] = {}
        self._load()

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = threading.Thread(target=self._schedule, name="replica-scheduler", daemon=True)
        self._scheduler.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for vm in self._vms.values():
                self._close_disks(vm)
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def _channel(self, endpoint: str) -> grpc.Channel:
        return channel_to(endpoint, self.config.client_tls)

    def _sender(self, vm: VmReplication) -> Sender:
        endpoint = vm.policy.replica_server
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = self._channel_factory(endpoint)
                channel = self._channels[endpoint] = self._telemetry.channel(channel)
        metadata = () if self.config.client_tls else ((PRIMARY_HEADER, self.config.site_name),)
        return Sender.on(channel, metadata, self._stop)

    # ---- persistence -----------------------------------------------------------------------------

    def _vm_dir(self, name: str) -> Path:
        return self.root / name

    def _load(self) -> None:
        for path in sorted(self.root.glob(f"*/{replication.STATE_FILE}")):
            request, record, last_sequence = replication.decode(path.read_bytes(), path)
            policy = validate_enable(request)
            gate = WriteGate()
            disks, held = self._open_disks(request, gate)
            vm = VmReplication(
                request,
                policy,
                record,
                disks,
                self._vm_dir(request.vm.name),
                last_sequence=last_sequence,
                gate=gate,
                site_disks=held,
            )
            if record.state == ReplicationState.INITIAL_REPLICATION_IN_PROGRESS:
                # The process died mid-transfer; the transfer starts over from a new cut.
                vm.record = replace(record, state=ReplicationState.READY_FOR_INITIAL_REPLICATION)
            elif record.state == ReplicationState.RESYNCHRONIZING:
                vm.record = replace(record, state=ReplicationState.REPLICATING, resync_required=True)
            self._note_resync(vm)
            self._vms[vm.name] = vm

    def _open_disks(
        self, request: replica_pb2.EnableReplicationRequest, gate: WriteGate
    ) -> tuple[dict[str, TrackedDevice], dict[str, SiteDisk]]:
        """Each disk from the site's owner, wrapped with change tracking: from now on every write
        through its export is tracked and passes the VM's ``gate``."""
        disks: dict[str, TrackedDevice] = {}
        held: dict[str, SiteDisk] = {}
        vm_dir = self._vm_dir(request.vm.name)
        vm_dir.mkdir(parents=True, exist_ok=True)
        try:
            for disk in request.vm.disks:
                site_disk = self._site_disks.open(
                    export_name(request.vm.name, disk.name), disk.path, DISK_USER, disk_format(disk)
                )
                held[disk.name] = site_disk
                tracker = ChangeLog.open(
                    vm_dir / f"{disk.name}.hrl", site_disk.virtual_size, DEFAULT_TRACK_BLOCK
                )
                disks[disk.name] = TrackedDevice(site_disk.base, tracker, vm_dir)
                site_disk.swap(GatedDevice(disks[disk.name], gate))
        except Exception:
            self._release(disks, held)
            raise
        return disks, held

    def _close_disks(self, vm: VmReplication) -> None:
        self._release(vm.disks, vm.site_disks)

    def _release(self, disks: dict[str, TrackedDevice], held: dict[str, SiteDisk]) -> None:
        """Unwrap the tracking (writes go to the file alone again) and let go of each disk."""
        for name, site_disk in held.items():
            site_disk.swap(site_disk.base)
            if name in disks:
                disks[name].tracker.close()
            self._site_disks.release(site_disk, DISK_USER)

    def _note_resync(self, vm: VmReplication) -> None:
        reasons = [d.tracker.resync_reason for d in vm.disks.values() if d.tracker.resync_required]
        if reasons and vm.record.initial_done:
            log.warning("resync required", extra={"vm": vm.name, "reason": reasons[0]})
            vm.record = replace(vm.record, resync_required=True)

    # ---- management ------------------------------------------------------------------------------

    def enable(self, request: replica_pb2.EnableReplicationRequest) -> VmReplication:
        # A VM that runs here is replicated as defined: what the request leaves out comes from there.
        request = complete_vm(request, self._definitions(request.vm.name))
        policy = validate_enable(request)
        with self._lock:
            if request.vm.name in self._vms:
                raise ReplicationExists(f"replication is already enabled for VM {request.vm.name!r}")
            gate = WriteGate()
            disks, held = self._open_disks(request, gate)
            record = Record().apply(Event.ENABLE, time.time_ns())
            vm = VmReplication(
                request, policy, record, disks, self._vm_dir(request.vm.name), gate=gate, site_disks=held
            )
            self._vms[vm.name] = vm
            vm.save()
        self._wake.set()
        log.info("replication enabled", extra={"vm": vm.name, "frequency": policy.frequency_seconds})
        return vm

    def get(self, name: str) -> VmReplication:
        with self._lock:
            vm = self._vms.get(name)
        if vm is None:
            raise ReplicationNotFound(f"no replication is enabled for VM {name!r}")
        return vm

    def replications(self) -> list[VmReplication]:
        with self._lock:
            return sorted(self._vms.values(), key=lambda vm: vm.name)

    def has(self, name: str) -> bool:
        """Whether this site replicates VM ``name`` (is its primary)."""
        with self._lock:
            return name in self._vms

    def device(self, vm_name: str, disk: str) -> SiteDisk:
        """The device every write to the disk must go through (the NBD export serves it): tracked, and
        behind the VM's gate so a cut sees all of the VM's disks at one instant."""
        vm = self.get(vm_name)
        if disk not in vm.site_disks:
            raise ReplicationNotFound(f"VM {vm_name!r} has no disk {disk!r}")
        return vm.site_disks[disk]

    def pause(self, name: str) -> VmReplication:
        vm = self.get(name)
        vm.event(Event.PAUSE, "paused by the administrator")
        return vm

    def resume(self, name: str) -> VmReplication:
        vm = self.get(name)
        vm.event(Event.RESUME)
        vm.next_due = 0.0
        self._wake.set()
        return vm

    def resync(self, name: str) -> VmReplication:
        vm = self.get(name)
        if not vm.record.initial_done:
            raise InvalidTransition(f"VM {name!r} has no initial replica to resynchronize yet")
        if Event.START_RESYNC not in vm.record.allowed():
            raise InvalidTransition(f"VM {name!r}: cannot resync while {vm.record.state.name.lower()}")
        vm.force_resync = True
        vm.next_due = 0.0
        self._wake.set()
        vm.save()
        return vm

    def disable(self, name: str) -> VmReplication:
        vm = self.get(name)
        with vm.running:
            vm.record = vm.record.apply(Event.DISABLE, time.time_ns())
            with self._lock:
                self._vms.pop(name, None)
            self._close_disks(vm)
            shutil.rmtree(self._vm_dir(name), ignore_errors=True)
        return vm

    def recovery_points(self, name: str) -> list[replica_pb2.RecoveryPoint]:
        return self._sender(self.get(name)).recovery_points(name)

    # ---- scheduling ------------------------------------------------------------------------------

    def _schedule(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.scheduler_tick_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            for vm in self.replications():
                if vm.record.schedulable and now >= vm.next_due and not vm.running.locked():
                    waiting = vm.record.state == ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
                    # Waiting for an import at the DR site is a cheap poll, not a cycle.
                    vm.next_due = now + (IMPORT_POLL_SECONDS if waiting else vm.policy.frequency_seconds)
                    self._pool.submit(self._run_quietly, vm)

    def _run_quietly(self, vm: VmReplication) -> None:
        """A scheduled cycle: its failure is recorded in the VM's state and health, not raised."""
        try:
            self.run_cycle(vm.name)
        except ServiceError as error:
            log.warning("replication cycle failed", extra={"vm": vm.name, "error": error.message})
        except Exception:
            # The top of a scheduler thread: nobody above would see it. The state already says CRITICAL.
            log.exception("replication cycle crashed", extra={"vm": vm.name})

    def replicate_now(self, name: str) -> VmReplication:
        self.run_cycle(name)
        return self.get(name)

    # ---- the cycle -------------------------------------------------------------------------------

    def run_cycle(self, name: str) -> None:
        """One cycle (initial, export, resync or delta, as the record needs), start to commit."""
        vm = self.get(name)
        if not vm.running.acquire(timeout=RPC_SECONDS):
            raise InvalidTransition(f"a cycle of VM {name!r} is still running")
        try:
            if not vm.record.schedulable:
                raise InvalidTransition(f"VM {name!r} is {vm.record.state.name.lower()}: no cycle runs")
            with self._telemetry.cycle(
                vm.name, vm.policy.frequency_seconds, lambda: vm.progress.total_bytes, time.monotonic
            ):
                cycle.run(vm, self._sender(vm), self._telemetry, self._stop)
        finally:
            vm.running.release()

    # ---- views -----------------------------------------------------------------------------------

    def to_proto(self, vm: VmReplication) -> replica_pb2.Replication:
        now = time.time_ns()
        record = replace(vm.record, pending_bytes=self._pending_bytes(vm))
        health, reasons = states.health(record, now)
        stats = states.statistics(record, now)
        running = vm.running.locked()
        return replica_pb2.Replication(
            vm=vm.request.vm,
            settings=vm.request.settings,
            state=replica_pb2.ReplicationState.Name(int(record.state)),
            health=replica_pb2.ReplicationHealth.Name(int(health)),
            health_reasons=list(reasons),
            statistics=replica_pb2.ReplicationStatistics(
                last_sync_unix_nanos=stats.last_sync_nanos,
                pending_bytes=stats.pending_bytes,
                average_delta_bytes=stats.average_delta_bytes,
                missed_cycles=stats.missed_cycles,
                total_cycles=stats.total_cycles,
                average_latency_seconds=stats.average_latency_seconds,
                progress=vm.progress.fraction if running else (1.0 if record.initial_done else 0.0),
                transferred_bytes=vm.progress.sent_bytes,
            ),
            resync_required=[n for n, d in vm.disks.items() if d.tracker.resync_required]
            or (list(vm.disks) if record.resync_required or vm.force_resync else []),
            last_sequence=vm.last_sequence,
        )

    def _pending_bytes(self, vm: VmReplication) -> int:
        total = 0
        for device in vm.disks.values():
            tracker = device.tracker
            total += sum(count for _first, count in tracker.changed_runs()) * tracker.block_size
        return total
