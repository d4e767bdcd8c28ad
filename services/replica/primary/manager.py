"""The primary site: replications per VM, their tracked disks, the cycle scheduler and persisted state.

Each VM's disks are opened as ``TrackedDevice``s (the tracking log sits under the state directory);
the NBD export and local writers reach the disks through ``device(vm, disk)`` so every write is
tracked. A scheduler thread starts a cycle for each VM whose interval is due; a cycle runs the
phases in ``cycle`` and then updates the pure ``states.Record``.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from overland.v1 import replica_pb2
from services.common.errors import OverlandError
from services.common.server import MAX_MESSAGE_BYTES
from services.replica import states
from services.replica.codec import media
from services.replica.codec.chunks import ChunkCodec
from services.replica.config import PRIMARY_HEADER, ReplicaConfig
from services.replica.errors import (
    CycleAborted,
    InvalidTransition,
    ReplicaLost,
    ReplicaStateCorrupted,
    ReplicaStorageFull,
    ReplicationExists,
    ReplicationNotFound,
)
from services.replica.files import write_atomic
from services.replica.nbd import NbdServer
from services.replica.primary import cycle
from services.replica.primary.chunking import TokenBucket
from services.replica.primary.cycle import CycleKind, Progress, Sender
from services.replica.primary.gate import GatedDevice
from services.replica.primary.tracking import DEFAULT_TRACK_BLOCK, ChangeLog, TrackedDevice, WriteGate
from services.replica.settings import InitialMethod, ReplicationPolicy, validate_enable
from services.replica.states import Event, Record, ReplicationState
from services.replica.telemetry import ReplicaTelemetry
from services.replica.vhd.image import open_disk

log = logging.getLogger(__name__)

ChannelFactory = Any  # Callable[[str], grpc.Channel]; Any so tests may pass intercepted channels
MAX_CONCURRENT_CYCLES = 4
IMPORT_POLL_SECONDS = 5.0


@dataclass
class VmReplication:
    """One VM replicated from this site."""

    request: replica_pb2.EnableReplicationRequest
    policy: ReplicationPolicy
    record: Record
    disks: dict[str, TrackedDevice]
    last_sequence: int = 0
    force_resync: bool = False
    next_due: float = 0.0
    running: threading.Lock = field(default_factory=threading.Lock)
    progress: Progress = field(default_factory=Progress)
    cycle_started: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # Every write to any disk of the VM passes it; a cut holds it, so all disks are cut at one instant.
    gate: WriteGate = field(default_factory=WriteGate)
    # Serializes changes of ``record`` and their persistence between RPC threads and the cycle thread.
    state_lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def name(self) -> str:
        return self.request.vm.name


class ReplicationManager:
    """All replications of this primary. Thread-safe; ``start`` runs the scheduler, ``close`` stops it."""

    def __init__(
        self,
        config: ReplicaConfig,
        channel_factory: ChannelFactory | None = None,
        exporter: NbdServer | None = None,
        telemetry: ReplicaTelemetry | None = None,
    ):
        self.config = config
        self._exporter = exporter
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
                _close_disks(vm.disks)
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def _channel(self, endpoint: str) -> grpc.Channel:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Notice a dead peer (a cut network) within seconds instead of at the stream deadline.
            ("grpc.keepalive_time_ms", 5000),
            ("grpc.keepalive_timeout_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        tls = self.config.client_tls
        if tls is None:
            return grpc.insecure_channel(endpoint, options=options)
        credentials = grpc.ssl_channel_credentials(
            tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
        )
        return grpc.secure_channel(endpoint, credentials, options=options)

    def _sender(self, vm: VmReplication) -> Sender:
        endpoint = vm.policy.replica_server
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = self._channel_factory(endpoint)
                channel = self._channels[endpoint] = self._telemetry.channel(channel)
        metadata = () if self.config.client_tls else ((PRIMARY_HEADER, self.config.primary_name),)
        return Sender.on(channel, metadata, self._stop)

    # ---- persistence -----------------------------------------------------------------------------

    def _vm_dir(self, name: str) -> Path:
        return self.root / name

    def _save(self, vm: VmReplication) -> None:
        with vm.state_lock:
            self._save_locked(vm)

    def _save_locked(self, vm: VmReplication) -> None:
        r = vm.record
        doc = {
            "request": base64.b64encode(vm.request.SerializeToString()).decode(),
            "state": int(r.state),
            "initial_done": r.initial_done,
            "resync_required": r.resync_required or vm.force_resync,
            "paused_since_nanos": r.paused_since_nanos,
            "last_sync_nanos": r.last_sync_nanos,
            "enabled_nanos": r.enabled_nanos,
            "error": r.error,
            "last_sequence": vm.last_sequence,
        }
        write_atomic(self._vm_dir(vm.name) / "replication.json", json.dumps(doc, indent=1).encode())

    def _load(self) -> None:
        for path in sorted(self.root.glob("*/replication.json")):
            try:
                doc = json.loads(path.read_bytes())
                request = replica_pb2.EnableReplicationRequest.FromString(base64.b64decode(doc["request"]))
                record = Record(
                    state=ReplicationState(doc["state"]),
                    initial_done=bool(doc["initial_done"]),
                    resync_required=bool(doc["resync_required"]),
                    paused_since_nanos=int(doc["paused_since_nanos"]),
                    last_sync_nanos=int(doc["last_sync_nanos"]),
                    enabled_nanos=int(doc["enabled_nanos"]),
                    error=str(doc["error"]),
                )
            except (ValueError, KeyError, TypeError) as error:
                raise ReplicaStateCorrupted(f"unreadable replication state {path}: {error}") from None
            policy = validate_enable(request)
            disks = self._open_disks(request)
            vm = VmReplication(request, policy, record, disks, last_sequence=int(doc["last_sequence"]))
            if record.state == ReplicationState.INITIAL_REPLICATION_IN_PROGRESS:
                # The process died mid-transfer; the transfer starts over from a new cut.
                vm.record = replace(record, state=ReplicationState.READY_FOR_INITIAL_REPLICATION)
            elif record.state == ReplicationState.RESYNCHRONIZING:
                vm.record = replace(record, state=ReplicationState.REPLICATING, resync_required=True)
            self._note_resync(vm)
            self._vms[vm.name] = vm
            self._export(vm)

    def _open_disks(self, request: replica_pb2.EnableReplicationRequest) -> dict[str, TrackedDevice]:
        disks: dict[str, TrackedDevice] = {}
        vm_dir = self._vm_dir(request.vm.name)
        vm_dir.mkdir(parents=True, exist_ok=True)
        try:
            for disk in request.vm.disks:
                device = open_disk(disk.path, writable=True)
                try:
                    tracker = ChangeLog.open(
                        vm_dir / f"{disk.name}.hrl", device.virtual_size, DEFAULT_TRACK_BLOCK
                    )
                except Exception:
                    device.close()
                    raise
                disks[disk.name] = TrackedDevice(device, tracker, vm_dir)
        except Exception:
            _close_disks(disks)
            raise
        return disks

    def _note_resync(self, vm: VmReplication) -> None:
        reasons = [d.tracker.resync_reason for d in vm.disks.values() if d.tracker.resync_required]
        if reasons and vm.record.initial_done:
            log.warning("resync required", extra={"vm": vm.name, "reason": reasons[0]})
            vm.record = replace(vm.record, resync_required=True)

    # ---- management ------------------------------------------------------------------------------

    def enable(self, request: replica_pb2.EnableReplicationRequest) -> VmReplication:
        policy = validate_enable(request)
        with self._lock:
            if request.vm.name in self._vms:
                raise ReplicationExists(f"replication is already enabled for VM {request.vm.name!r}")
            disks = self._open_disks(request)
            record = Record().apply(Event.ENABLE, time.time_ns())
            vm = VmReplication(request, policy, record, disks)
            self._vms[vm.name] = vm
            self._save(vm)
            self._export(vm)
        self._wake.set()
        log.info("replication enabled", extra={"vm": vm.name, "frequency": policy.frequency_seconds})
        return vm

    def _export(self, vm: VmReplication) -> None:
        """Serve each disk over NBD as ``<vm>/<disk>``; the served device is tracked, so every write is."""
        if self._exporter is not None:
            for disk, tracked in vm.disks.items():
                self._exporter.add_export(export_name(vm.name, disk), GatedDevice(tracked, vm.gate))

    def _unexport(self, vm: VmReplication) -> None:
        if self._exporter is not None:
            for disk in vm.disks:
                self._exporter.remove_export(export_name(vm.name, disk))

    def get(self, name: str) -> VmReplication:
        with self._lock:
            vm = self._vms.get(name)
        if vm is None:
            raise ReplicationNotFound(f"no replication is enabled for VM {name!r}")
        return vm

    def replications(self) -> list[VmReplication]:
        with self._lock:
            return sorted(self._vms.values(), key=lambda vm: vm.name)

    def device(self, vm_name: str, disk: str) -> GatedDevice:
        """The device every write to the disk must go through (the NBD export serves it): tracked, and
        behind the VM's gate so a cut sees all of the VM's disks at one instant."""
        vm = self.get(vm_name)
        if disk not in vm.disks:
            raise ReplicationNotFound(f"VM {vm_name!r} has no disk {disk!r}")
        return GatedDevice(vm.disks[disk], vm.gate)

    def _event(self, vm: VmReplication, event: Event, reason: str = "") -> None:
        with vm.state_lock:
            before = vm.record
            try:
                vm.record = vm.record.apply(event, time.time_ns(), reason)
            except states.TransitionError as error:
                raise InvalidTransition(f"VM {vm.name!r}: {error}") from None
            # A cycle starting in REPLICATING changes nothing durable: skip two fsyncs per cycle.
            if event != Event.CYCLE_STARTED or vm.record.state != before.state:
                self._save(vm)

    def pause(self, name: str) -> VmReplication:
        vm = self.get(name)
        self._event(vm, Event.PAUSE, "paused by the administrator")
        return vm

    def resume(self, name: str) -> VmReplication:
        vm = self.get(name)
        self._event(vm, Event.RESUME)
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
        self._save(vm)
        return vm

    def disable(self, name: str) -> VmReplication:
        vm = self.get(name)
        with vm.running:
            vm.record = vm.record.apply(Event.DISABLE, time.time_ns())
            with self._lock:
                self._vms.pop(name, None)
            self._unexport(vm)
            _close_disks(vm.disks)
            shutil.rmtree(self._vm_dir(name), ignore_errors=True)
        return vm

    def recovery_points(self, name: str) -> list[replica_pb2.RecoveryPoint]:
        vm = self.get(name)
        sender = self._sender(vm)
        try:
            response = sender.stub.ListRecoveryPoints(
                replica_pb2.ListRecoveryPointsRequest(vm_name=name),
                timeout=cycle.RPC_SECONDS,
                metadata=sender.metadata,
            )
        except grpc.RpcError as error:
            raise cycle._as_error(error, "listing recovery points") from None
        return list(response.recovery_points)

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
        except OverlandError as error:
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
        if not vm.running.acquire(timeout=cycle.RPC_SECONDS):
            raise InvalidTransition(f"a cycle of VM {name!r} is still running")
        try:
            if not vm.record.schedulable:
                raise InvalidTransition(f"VM {name!r} is {vm.record.state.name.lower()}: no cycle runs")
            with self._telemetry.cycle(
                vm.name, vm.policy.frequency_seconds, lambda: vm.progress.total_bytes, time.monotonic
            ):
                self._cycle(vm)
        finally:
            vm.running.release()

    def _kind(self, vm: VmReplication) -> str:
        if vm.record.state == ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION:
            return "await_import"
        if not vm.record.initial_done:
            method = vm.policy.initial_method
            if method == InitialMethod.EXTERNAL_MEDIA:
                return CycleKind.EXPORT
            return CycleKind.EXISTING_COPY if method == InitialMethod.EXISTING_COPY else CycleKind.INITIAL
        if (
            vm.force_resync
            or vm.record.resync_required
            or any(d.tracker.resync_required for d in vm.disks.values())
        ):
            return CycleKind.RESYNC
        return CycleKind.DELTA

    def _cycle(self, vm: VmReplication) -> None:
        kind = self._kind(vm)
        sender = self._sender(vm)
        if kind == "await_import":
            self._check_import(vm, sender)
            return
        start_mono, start_ns = time.monotonic(), time.time_ns()
        vm.cycle_started = start_mono
        if kind in (CycleKind.INITIAL, CycleKind.EXISTING_COPY, CycleKind.EXPORT):
            self._event(vm, Event.START_INITIAL)
        elif kind == CycleKind.RESYNC:
            self._event(vm, Event.START_RESYNC)
        else:
            self._event(vm, Event.CYCLE_STARTED)
        snapshots: dict[str, Any] = {}
        shipped = False
        try:
            committed = 0 if kind == CycleKind.EXPORT else sender.receiver_state(vm.name).committed_sequence
            if committed == 0 and kind in (CycleKind.DELTA, CycleKind.RESYNC):
                # The DR site lost (or an operator removed) the replica: deltas have nothing to apply to.
                with vm.state_lock:
                    vm.record = replace(vm.record, initial_done=False)
                raise ReplicaLost(
                    f"the DR site has no replica of VM {vm.name!r} any more; "
                    "the next cycle starts a new initial replication"
                )
            with self._telemetry.phase("cut", {"overland.kind": kind}):
                snapshots = cycle.cut(vm.disks, vm.gate, full=kind != CycleKind.DELTA)
            vm.phase_seconds["cut"] = time.monotonic() - start_mono
            header = self._header(vm, kind, committed + 1, start_ns)
            with self._telemetry.phase("plan"):
                extents = self._plan(vm, kind, snapshots, sender)
            total = sum(e.length for e in extents)
            vm.progress = Progress(total_bytes=total)
            codec = ChunkCodec(compress=vm.policy.compression)
            bucket = (
                TokenBucket(vm.policy.bandwidth_limit, max(vm.policy.bandwidth_limit, 1024 * 1024))
                if vm.policy.bandwidth_limit
                else None
            )

            def stream(attempt: replica_pb2.DeltaHeader) -> Any:
                return cycle.messages(
                    attempt,
                    extents,
                    snapshots,
                    codec=codec,
                    progress=vm.progress,
                    bucket=bucket,
                    abort=self._stop,
                )

            if kind == CycleKind.EXPORT:
                media.write_export(Path(vm.policy.export_path), stream(header))
                shipped = True
                vm.last_sequence = header.sequence
                self._event(vm, Event.EXPORT_DONE)
                return
            streamed = time.monotonic()
            sent = {"overland.sequence": header.sequence, "overland.bytes": total}
            with self._telemetry.phase("stream", sent):
                ack = sender.send(header, stream, total)
            vm.phase_seconds["stream_and_commit"] = time.monotonic() - streamed
            shipped = True
            with self._telemetry.phase("commit"):
                self._commit(vm, kind, ack, start_mono=start_mono, start_ns=start_ns, total=total)
        except CycleAborted:
            # Shutting down is not a failure of the replication: state and health stay as they were.
            raise
        except ReplicaStorageFull as error:
            self._fail(vm, start_mono, start_ns, Event.STORAGE_FULL, f"DR site storage full: {error.message}")
            raise
        except OverlandError as error:
            self._fail(vm, start_mono, start_ns, Event.CYCLE_FAILED, error.message)
            raise
        except (OSError, grpc.RpcError) as error:
            self._fail(vm, start_mono, start_ns, Event.CYCLE_FAILED, f"{type(error).__name__}: {error}")
            raise
        finally:
            cycle.release(snapshots, shipped)

    def _header(self, vm: VmReplication, kind: str, sequence: int, cut_ns: int) -> replica_pb2.DeltaHeader:
        return replica_pb2.DeltaHeader(
            vm_name=vm.name,
            sequence=sequence,
            disk_sizes={name: d.virtual_size for name, d in vm.disks.items()},
            vm=vm.request.vm,
            full=kind in (CycleKind.INITIAL, CycleKind.EXPORT),
            existing_copy=kind == CycleKind.EXISTING_COPY,
            cut_time_unix_nanos=cut_ns,
            additional_recovery_points=vm.policy.additional_recovery_points,
        )

    def _plan(
        self, vm: VmReplication, kind: str, snapshots: dict[str, Any], sender: Sender
    ) -> list[cycle.Extent]:
        differing = None
        if kind in (CycleKind.RESYNC, CycleKind.EXISTING_COPY):
            differing = {
                name: cycle.differing_ranges(
                    snapshot, sender.block_hashes(vm.name, name, DEFAULT_TRACK_BLOCK), DEFAULT_TRACK_BLOCK
                )
                for name, snapshot in snapshots.items()
            }
        return cycle.plan(snapshots, vm.disks, kind, differing)

    def _commit(
        self,
        vm: VmReplication,
        kind: str,
        ack: replica_pb2.DeltaAck,
        *,
        start_mono: float,
        start_ns: int,
        total: int,
    ) -> None:
        """Phase 4: the DR site committed; record the sequence, the statistics and the state."""
        vm.last_sequence = ack.sequence
        latency = time.monotonic() - start_mono
        outcome = states.CycleOutcome(
            start_ns,
            ok=True,
            latency_seconds=latency,
            delta_bytes=total,
            overran=latency > vm.policy.frequency_seconds,
        )
        if kind in (CycleKind.INITIAL, CycleKind.EXISTING_COPY):
            event = Event.INITIAL_DONE
        elif kind == CycleKind.RESYNC:
            event = Event.RESYNC_DONE
        else:
            event = Event.CYCLE_OK
        with vm.state_lock:
            vm.record = vm.record.with_cycle(outcome)
            vm.force_resync = False
            if event in vm.record.allowed():
                self._event(vm, event)
            else:
                # Paused (or disabled) while the cycle ran: the data is committed, the pause stands.
                vm.record = replace(
                    vm.record,
                    last_sync_nanos=time.time_ns(),
                    initial_done=vm.record.initial_done or event == Event.INITIAL_DONE,
                    resync_required=vm.record.resync_required and event != Event.RESYNC_DONE,
                )
                self._save(vm)
        log.info(
            "cycle committed",
            extra={
                "vm": vm.name,
                "kind": kind,
                "seq": ack.sequence,
                "bytes": total,
                "seconds": round(latency, 3),
                **{f"{phase}_s": round(seconds, 3) for phase, seconds in vm.phase_seconds.items()},
            },
        )

    def _fail(self, vm: VmReplication, start_mono: float, start_ns: int, event: Event, reason: str) -> None:
        latency = time.monotonic() - start_mono
        with vm.state_lock:
            vm.record = vm.record.with_cycle(
                states.CycleOutcome(start_ns, ok=False, latency_seconds=latency, delta_bytes=0)
            )
            if event in vm.record.allowed():
                self._event(vm, event, reason)
            else:
                self._save(vm)

    def _check_import(self, vm: VmReplication, sender: Sender) -> None:
        """External media: the initial replica is complete once the DR site imported the export."""
        state = sender.receiver_state(vm.name)
        if state.committed_sequence >= vm.last_sequence > 0:
            self._event(vm, Event.INITIAL_DONE)

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


def export_name(vm_name: str, disk: str) -> str:
    """The NBD export name of a VM disk."""
    return f"{vm_name}/{disk}"


def _close_disks(disks: dict[str, TrackedDevice]) -> None:
    for device in disks.values():
        device.close()
