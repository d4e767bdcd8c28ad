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
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.errors import ServiceError
from services.replica.config import PRIMARY_HEADER, ReplicaConfig
from services.replica.disks import DiskOwned, SiteDisk, SiteDisks, export_name
from services.replica.errors import (
    InvalidReplicationSettings,
    InvalidTransition,
    ReplicationExists,
    ReplicationNotFound,
    ReplicaUnreachable,
)
from services.replica.locks import WriteGate
from services.replica.primary import cycle, replication
from services.replica.primary.changes import Move, changed_settings, plan_move
from services.replica.primary.connection import CHECK_SECONDS, check_connection, refusal
from services.replica.primary.cycles import CycleRun
from services.replica.primary.divergence import OutsideWrites, changed_while_down, record_stamp
from services.replica.primary.gate import GatedDevice
from services.replica.primary.replication import Outage, VmReplication
from services.replica.primary.sender import PROBE_SECONDS, RPC_SECONDS, Sender, backoff, channel_to
from services.replica.primary.tracking import DEFAULT_TRACK_BLOCK, ChangeLog, TrackedDevice
from services.replica.primary.views import pending_bytes, replication_view
from services.replica.settings import (
    InitialMethod,
    complete_vm,
    disk_format,
    validate_enable,
    validate_endpoint,
)
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
        # VMs whose EnableReplication is under way (it tests the connection without the lock).
        self._enabling: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set to run the scheduler now (enable, resume, resync) instead of at its next tick.
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CYCLES, thread_name_prefix="cycle")
        self._scheduler: threading.Thread | None = None
        self._channels: dict[str, grpc.Channel] = {}
        # Who else writes the disk files (divergence.py).
        self._outside = OutsideWrites()
        self._load()

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = threading.Thread(target=self._schedule, name="replica-scheduler", daemon=True)
        self._scheduler.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for vm in self.replications():
            vm.abort.stop("the primary is shutting down")
        if self._scheduler is not None:
            self._scheduler.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for vm in self._vms.values():
                # A clean stop: each disk file's stamp lets the next start see a change made meanwhile.
                self._close_disks(vm, stamp=True)
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
        self._outside.close()

    def _channel(self, endpoint: str) -> grpc.Channel:
        return channel_to(endpoint, self.config.client_tls)

    def _sender(self, vm: VmReplication) -> Sender:
        endpoint = vm.policy.replica_server
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = self._channel_factory(endpoint)
                channel = self._channels[endpoint] = self._telemetry.channel(channel)
        return Sender.on(channel, self._metadata(), vm.abort, lambda why: self._note_outage(vm, why))

    @staticmethod
    def _note_outage(vm: VmReplication, why: str | None) -> None:
        """The DR site did not answer (``why``), or answered again (None)."""
        with vm.state_lock:
            if why is None:
                if vm.outage is not None:
                    log.info("DR site answers again", extra={"vm": vm.name})
                vm.outage = None
            elif vm.outage is None:
                vm.outage = Outage(time.time_ns(), why)
            else:
                vm.outage.reason = why

    def _retry_soon(self, vm: VmReplication) -> None:
        """The DR site is out: probe it again after a capped backoff with jitter, not a whole interval."""
        with vm.state_lock:
            probes = vm.outage.probes if vm.outage is not None else 0
        vm.next_due = time.monotonic() + backoff(probes + 1, random.random())  # noqa: S311 (jitter)
        self._wake.set()

    # ---- persistence -----------------------------------------------------------------------------

    def _vm_dir(self, name: str) -> Path:
        return self.root / name

    def _load(self) -> None:
        for path in sorted(self.root.glob(f"*/{replication.STATE_FILE}")):
            data = path.read_bytes()
            request, record, last_sequence = replication.decode(data, path)
            policy = validate_enable(request)
            gate = WriteGate()
            faults = self._claim_loaded(request)
            disks, held = self._open_disks(request, gate, loading=True)
            vm = VmReplication(
                request,
                policy,
                record,
                disks,
                self._vm_dir(request.vm.name),
                last_sequence=last_sequence,
                gate=gate,
                site_disks=held,
                cycle_ids_reserved=replication.reserved_cycle_ids(data),
            )
            vm.faults = faults
            if record.state == ReplicationState.INITIAL_REPLICATION_IN_PROGRESS:
                # The process died mid-transfer; the transfer starts over from a new cut.
                vm.record = replace(record, state=ReplicationState.READY_FOR_INITIAL_REPLICATION)
            elif record.state == ReplicationState.RESYNCHRONIZING:
                vm.record = replace(record, state=ReplicationState.REPLICATING, resync_required=True)
            self._note_resync(vm)
            self._vms[vm.name] = vm

    def _claim_loaded(self, request: replica_pb2.EnableReplicationRequest) -> list[str]:
        """Claim the disks of a replication the site had (at start): a disk file another VM claimed
        first (state from before disks had one owner) is a fault its health names, not a reason to
        stop the site."""
        faults = []
        for disk in request.vm.disks:
            try:
                self._site_disks.claim(request.vm.name, disk.name, disk.path, DISK_USER)
            except DiskOwned as error:
                log.error("disk owned by another VM", extra={"vm": request.vm.name, "error": error.message})
                faults.append(f"{error.message}: disable one of the two")
        return faults

    def _open_disks(
        self, request: replica_pb2.EnableReplicationRequest, gate: WriteGate, loading: bool = False
    ) -> tuple[dict[str, TrackedDevice], dict[str, SiteDisk]]:
        """Each disk from the site's owner, wrapped with change tracking: from now on every write
        through its export is tracked and passes the VM's ``gate``, and a write by another program
        is seen (``divergence``). ``loading``: at start, a disk file that changed while the site was
        down needs a resync."""
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
                log_path = vm_dir / f"{disk.name}.hrl"
                tracker = ChangeLog.open(log_path, site_disk.virtual_size, DEFAULT_TRACK_BLOCK)
                disks[disk.name] = TrackedDevice(site_disk.base, tracker, vm_dir)
                if loading and (why := changed_while_down(log_path, site_disk.path, tracker.found_clean)):
                    tracker.require_resync(why)
                self._outside.watch(site_disk.key, str(site_disk.path))
                site_disk.swap(GatedDevice(disks[disk.name], gate))
        except Exception:
            self._release(disks, held)
            raise
        return disks, held

    def _unclaim(self, request: replica_pb2.EnableReplicationRequest) -> None:
        for disk in request.vm.disks:
            self._site_disks.unclaim(request.vm.name, disk.name, DISK_USER)

    def _close_disks(self, vm: VmReplication, stamp: bool = False) -> None:
        self._release(vm.disks, vm.site_disks, stamp)

    def _release(
        self, disks: dict[str, TrackedDevice], held: dict[str, SiteDisk], stamp: bool = False
    ) -> None:
        """Unwrap the tracking (writes go to the file alone again) and let go of each disk; with
        ``stamp``, record each file as it is after its last write through the site."""
        for name, site_disk in held.items():
            site_disk.swap(site_disk.base)
            self._outside.unwatch(site_disk.key)
            if name in disks:
                disks[name].tracker.close()
            self._site_disks.release(site_disk, DISK_USER)
            if stamp and name in disks:
                record_stamp(disks[name].tracker.path, site_disk.path)

    def _check_outside_writes(self, vm: VmReplication) -> None:
        """A disk file another program wrote is not what the tracking log says: resync it."""
        for name, site_disk in vm.site_disks.items():
            writers = self._outside.writers(site_disk.key)
            if writers and name in vm.disks:
                vm.disks[name].tracker.require_resync(
                    f"the disk file {site_disk.path} was written outside the export by {', '.join(writers)}"
                )
                self._note_resync(vm)

    def _note_resync(self, vm: VmReplication) -> None:
        reasons = [d.tracker.resync_reason for d in vm.disks.values() if d.tracker.resync_required]
        if reasons and vm.record.initial_done:
            log.warning("resync required", extra={"vm": vm.name, "reason": reasons[0]})
            vm.record = replace(vm.record, resync_required=True)

    # ---- management ------------------------------------------------------------------------------

    def enable(self, request: replica_pb2.EnableReplicationRequest) -> VmReplication:
        # A VM that runs here is replicated as defined: what the request leaves out comes from there.
        request = complete_vm(request, self._definitions(request.vm.name))
        vm = self._add(request, Record().apply(Event.ENABLE, time.time_ns()), test_first=True)
        log.info("replication enabled", extra={"vm": vm.name, "frequency": vm.policy.frequency_seconds})
        return vm

    def _add(
        self,
        request: replica_pb2.EnableReplicationRequest,
        record: Record,
        last_sequence: int = 0,
        *,
        test_first: bool = False,
    ) -> VmReplication:
        """A new replication of this site (its disks claimed, opened and tracked), saved, its first
        cycle due now. ``test_first``: refuse a DR site that fails Test-VMReplicationConnection's
        checks (unless the first copy goes by external media)."""
        policy = validate_enable(request)
        name = request.vm.name
        with self._lock:
            if name in self._vms or name in self._enabling:
                raise ReplicationExists(f"replication is already enabled for VM {name!r}")
            self._enabling.add(name)
        try:
            self._site_disks.claim_all(name, [(d.name, d.path) for d in request.vm.disks], DISK_USER)
            try:
                if test_first and policy.initial_method != InitialMethod.EXTERNAL_MEDIA:
                    # Test-VMReplicationConnection first: a DR site that cannot take it is refused now,
                    # not found out by the first cycle.
                    tested = self.test_connection(policy.replica_server, disks=request.vm.disks)
                    if not tested.ok:
                        raise refusal(name, tested)
                gate = WriteGate()
                disks, held = self._open_disks(request, gate)
            except BaseException:
                self._unclaim(request)
                raise
            vm = VmReplication(
                request,
                policy,
                record,
                disks,
                self._vm_dir(name),
                last_sequence=last_sequence,
                gate=gate,
                site_disks=held,
            )
            with self._lock:
                self._vms[vm.name] = vm
            vm.save()
        finally:
            with self._lock:
                self._enabling.discard(name)
        self._wake.set()
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
        return self._cycle_soon(name, Event.RESUME)

    def _cycle_soon(self, name: str, event: Event) -> VmReplication:
        """Apply ``event``, after which the VM's next cycle is due now."""
        vm = self.get(name)
        vm.event(event)
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
        # A running cycle stops at its next chunk rather than holding the disable until it is done.
        vm.abort.stop("replication was disabled")
        with vm.running:
            vm.record = vm.record.apply(Event.DISABLE, time.time_ns())
            with self._lock:
                self._vms.pop(name, None)
            self._close_disks(vm)
            self._unclaim(vm.request)
            shutil.rmtree(self._vm_dir(name), ignore_errors=True)
            queued = vm.cycles.queued
            if queued is not None:
                vm.cycles.finish(queued, error_code="FAILED_PRECONDITION", error="replication was disabled")
        return vm

    def set_replication(
        self,
        name: str,
        settings: replica_pb2.ReplicationSettings,
        fields: Sequence[str],
        resync: bool = False,
    ) -> VmReplication:
        """Set-VMReplication (``primary/changes.py``): the new settings from the next cycle on. A move
        to another replica server stops the running cycle (it streams to the old one) first."""
        vm = self.get(name)
        request = replica_pb2.EnableReplicationRequest()
        request.CopyFrom(vm.request)
        request.settings.CopyFrom(changed_settings(vm.request.settings, settings, fields))
        policy = validate_enable(request)
        endpoint = policy.replica_server
        move = None
        if endpoint != vm.policy.replica_server:
            theirs = self._committed_at(endpoint, name)
            move = plan_move(
                name,
                endpoint,
                ours=vm.last_sequence,
                theirs=theirs,
                initial_done=vm.record.initial_done,
                resync=resync,
            )
            vm.abort.stop(f"the replica server changes to {endpoint}")
        try:
            with vm.running, vm.state_lock:
                vm.request, vm.policy = request, policy
                if move is Move.RESYNC:
                    vm.force_resync = True
                elif move is Move.INITIAL:
                    paused = vm.record.state == ReplicationState.SUSPENDED
                    state = vm.record.state if paused else ReplicationState.READY_FOR_INITIAL_REPLICATION
                    vm.record = replace(
                        vm.record, state=state, initial_done=False, resync_required=False, error=""
                    )
                    vm.last_sequence, vm.force_resync = 0, False
                vm.outage = None
                vm.save()
        finally:
            vm.abort.resume()
        vm.next_due = min(vm.next_due, time.monotonic() + policy.frequency_seconds)
        self._wake.set()
        log.info(
            "replication settings changed",
            extra={"vm": name, "fields": ",".join(fields), "move": move and move.value},
        )
        return vm

    def _committed_at(self, endpoint: str, vm_name: str) -> int:
        """The sequence the site at ``endpoint`` holds VM ``vm_name``'s replica at (0: none)."""
        channel = self._channel_factory(endpoint)
        try:
            sender = Sender.on(channel, self._metadata(), threading.Event())
            return sender.receiver_state(vm_name, timeout=CHECK_SECONDS).committed_sequence
        finally:
            channel.close()

    def test_connection(
        self, endpoint: str, vm_name: str = "", disks: Iterable[replica_pb2.VmDisk] = ()
    ) -> replica_pb2.ConnectionTest:
        """Test-VMReplicationConnection to ``endpoint``, for the disks of VM ``vm_name`` (replicated or
        defined here) or ``disks`` if either is given (``primary/connection.py``)."""
        violations = validate_endpoint(endpoint, "replica_server")
        if violations:
            raise InvalidReplicationSettings(violations[0].description, violations)
        paths = [d.path for d in disks] or self._disk_paths(vm_name)
        needed = sum(_allocated(path) for path in paths) if (vm_name or paths) else None
        channel = self._channel_factory(endpoint)
        try:
            stub = replica_pb2_grpc.ReplicaReceiverServiceStub(channel)
            request = replica_pb2.CheckReplicaServerRequest(vm_name=vm_name)

            def ask() -> replica_pb2.ReplicaServerCheck:
                return stub.CheckReplicaServer(
                    request, timeout=CHECK_SECONDS, metadata=self._metadata(), wait_for_ready=True
                )

            return check_connection(endpoint, self.config.client_tls, ask, needed)
        finally:
            channel.close()

    def _disk_paths(self, vm_name: str) -> list[str]:
        """The disk files of VM ``vm_name``: its replication's, else its definition's ([] for none)."""
        if not vm_name:
            return []
        with self._lock:
            vm = self._vms.get(vm_name)
        defined = vm.request.vm if vm is not None else self._definitions(vm_name)
        if defined is None:
            raise ReplicationNotFound(f"no replication and no VM named {vm_name!r} at this site")
        return [disk.path for disk in defined.disks]

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self.config.client_tls else ((PRIMARY_HEADER, self.config.site_name),)

    # ---- failover (``services.replica.failover`` decides; these keep the replication's side) -----

    def prepare(self, name: str) -> int:
        """Start-VMFailover -Prepare: ship what changed in a last cycle whose header says so, then
        stop cycling (SYNCED_REPLICATION_COMPLETE). The caller made sure nothing writes the disks.
        Returns the bytes that cycle sent."""
        self.run_cycle(name, planned=True)
        return self.get(name).progress.sent_bytes

    def cancel_prepare(self, name: str) -> VmReplication:
        """A prepared planned failover is called off: cycles go on."""
        return self._cycle_soon(name, Event.CANCEL_FAILOVER)

    def changed_since_cut(self, name: str) -> int:
        """Bytes written to the VM's disks since its last cut (0: the disks are as last shipped)."""
        return pending_bytes(self.get(name))

    def adopt_primary(
        self, request: replica_pb2.EnableReplicationRequest, last_sequence: int, resync: bool
    ) -> VmReplication:
        """Become the primary of a replica this site kept (a reversed failover): its disks are
        already at the DR site at ``last_sequence``, so no initial replication; ``resync``: they may
        differ there (an unplanned failover), so the first cycle compares block hashes."""
        now = time.time_ns()
        record = replace(
            Record().apply(Event.ENABLE, now),
            state=ReplicationState.REPLICATING,
            initial_done=True,
            last_sync_nanos=now,
            resync_required=resync,
        )
        vm = self._add(request, record, last_sequence)
        log.info("replication reversed", extra={"vm": vm.name, "seq": last_sequence, "resync": resync})
        return vm

    def recovery_points(self, name: str) -> list[replica_pb2.RecoveryPoint]:
        return self._sender(self.get(name)).recovery_points(name)

    # ---- scheduling ------------------------------------------------------------------------------

    def _schedule(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._until_next())
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            for vm in self.replications():
                self._check_outside_writes(vm)
                queued = vm.cycles.queued
                if queued is not None and not vm.record.schedulable:
                    # Paused (or failed over) after ReplicateNow queued it: it will not run.
                    vm.cycles.finish(queued, error_code="FAILED_PRECONDITION", error=self._no_cycle(vm))
                    continue
                due = now >= vm.next_due or queued is not None
                if vm.record.schedulable and due and not vm.submitted.is_set():
                    waiting = vm.record.state == ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
                    # Waiting for an import at the DR site is a cheap poll, not a cycle.
                    vm.next_due = now + (IMPORT_POLL_SECONDS if waiting else vm.policy.frequency_seconds)
                    vm.submitted.set()
                    self._pool.submit(self._run_quietly, vm)

    def _until_next(self) -> float:
        """How long the scheduler sleeps: a tick, or less when a DR site that is out is due a probe."""
        now = time.monotonic()
        probes = [vm.next_due - now for vm in self.replications() if vm.outage is not None]
        return max(0.02, min([self.config.scheduler_tick_seconds, *probes]))

    def _probe(self, vm: VmReplication) -> bool:
        """Whether the DR site of a VM whose DR site was out answers now (a cheap call, no cycle)."""
        try:
            self._sender(vm).receiver_state(vm.name, timeout=PROBE_SECONDS)
        except ReplicaUnreachable as error:
            with vm.state_lock:
                if vm.outage is not None:
                    vm.outage.probes += 1
            self._note_outage(vm, error.message)
            self._retry_soon(vm)
            return False
        except ServiceError:
            pass  # it answered, with an error the cycle will report
        self._note_outage(vm, None)
        return True

    def _run_quietly(self, vm: VmReplication) -> None:
        """A cycle the scheduler started (after a probe, while the VM's DR site was out): its failure
        is recorded in the VM's state, health and cycle record, not raised."""
        try:
            if vm.outage is not None and vm.cycles.queued is None and not self._probe(vm):
                return
            self.run_cycle(vm.name)
        except ServiceError as error:
            log.warning("replication cycle failed", extra={"vm": vm.name, "error": error.message})
        except Exception:
            # The top of a scheduler thread: nobody above would see it. The state already says CRITICAL.
            log.exception("replication cycle crashed", extra={"vm": vm.name})
        finally:
            vm.submitted.clear()
            if vm.cycles.queued is not None:
                # ReplicateNow asked while this cycle ran: the next one starts at once.
                self._wake.set()

    @staticmethod
    def _no_cycle(vm: VmReplication) -> str:
        return f"VM {vm.name!r} is {vm.record.state.name.lower()}: no cycle runs"

    def replicate_now(self, name: str) -> CycleRun:
        """Queue a cycle (or return the one queued already) and return at once; ``watch_cycle``
        follows it. The cycle is a child of the caller's trace."""
        vm = self.get(name)
        if not vm.record.schedulable:
            raise InvalidTransition(self._no_cycle(vm))
        queued = vm.cycles.request(self._telemetry.caller())
        self._wake.set()
        return queued

    def watch_cycle(
        self, name: str, cycle_id: int, active: Callable[[], bool]
    ) -> Iterator[replica_pb2.Cycle]:
        """Cycle ``cycle_id`` of VM ``name`` (0: its running or last one), at each change until it ends."""
        return self.get(name).cycles.watch(cycle_id, active)

    # ---- the cycle -------------------------------------------------------------------------------

    def run_cycle(self, name: str, *, planned: bool = False) -> None:
        """One cycle (initial, export, resync or delta, as the record needs), start to commit: the one
        ReplicateNow queued, else a scheduled one. Its outcome goes into its cycle record.
        ``planned``: the last one before a planned failover; replication stops after it."""
        vm = self.get(name)
        if not vm.running.acquire(timeout=RPC_SECONDS):
            raise InvalidTransition(f"a cycle of VM {name!r} is still running")
        try:
            if planned and Event.PLANNED_FAILOVER not in vm.record.allowed():
                state = vm.record.state.name.lower().replace("_", " ")
                raise InvalidTransition(f"VM {name!r}: cannot prepare a planned failover while {state}")
            if not vm.record.schedulable:
                raise InvalidTransition(self._no_cycle(vm))
            self._check_outside_writes(vm)
            run = vm.cycles.start(cycle.kind_of(vm).value)
            vm.progress = run.progress
            try:
                with (
                    self._telemetry.within(run.context),
                    self._telemetry.cycle(
                        vm.name, vm.policy.frequency_seconds, lambda: run.progress.total_bytes, time.monotonic
                    ),
                ):
                    cycle.run(
                        vm,
                        self._sender(vm),
                        self._telemetry,
                        vm.abort,
                        endpoint=self.config.endpoint,
                        planned=planned,
                    )
            except ServiceError as error:
                vm.cycles.finish(run, error_code=error.code.name, error=error.message)
                if isinstance(error, ReplicaUnreachable):
                    self._note_outage(vm, error.message)
                    self._retry_soon(vm)
                raise
            except Exception as error:
                vm.cycles.finish(run, error_code="INTERNAL", error=f"{type(error).__name__}: {error}")
                raise
            vm.cycles.finish(run, sequence=vm.last_sequence)
            if planned:
                vm.event(Event.PLANNED_FAILOVER)
        finally:
            vm.running.release()

    # ---- views -----------------------------------------------------------------------------------

    def to_proto(self, vm: VmReplication) -> replica_pb2.Replication:
        return replication_view(vm, time.time_ns())


def _allocated(path: str) -> int:
    """The bytes a disk file takes (what its first copy carries, at most)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0
