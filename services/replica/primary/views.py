"""A replication as ``GetReplication`` shows it: state, health with every reason (the outage, a disk
owned twice, why a resync is required), statistics and the running or last cycle."""

from __future__ import annotations

from dataclasses import replace

from overland.v1 import replica_pb2
from services.replica import states
from services.replica.primary.replication import VmReplication
from services.replica.telemetry import rpo_violated


def replication_view(vm: VmReplication, now: int) -> replica_pb2.Replication:
    """The ``Replication`` message of ``vm`` at ``now`` (nanoseconds)."""
    record = replace(vm.record, pending_bytes=pending_bytes(vm))
    resync = (
        ""
        if not vm.record.initial_done
        else "; ".join(
            f"disk {name}: {device.tracker.resync_reason}"
            for name, device in vm.disks.items()
            if device.tracker.resync_required and device.tracker.resync_reason
        )
    )
    health, reasons = states.health(record, now, outage_words(vm, now), vm.faults, resync)
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
            last_cycle_unix_nanos=stats.last_cycle_end_nanos,
            last_cycle_bytes=stats.last_cycle_bytes,
            last_cycle_seconds=stats.last_cycle_seconds,
            rpo_met=rpo_violated(record.last_sync_nanos, now, vm.policy.frequency_seconds) is False,
        ),
        resync_required=[n for n, d in vm.disks.items() if d.tracker.resync_required]
        or (list(vm.disks) if record.resync_required or vm.force_resync else []),
        last_sequence=vm.last_sequence,
        cycle=latest.to_proto() if (latest := vm.cycles.latest()) is not None else None,
    )


def outage_words(vm: VmReplication, now_nanos: int) -> str:
    """Why the VM's DR site does not answer, for its health ("" while it does)."""
    with vm.state_lock:
        outage = vm.outage
        if outage is None:
            return ""
        since, why = outage.since_nanos, outage.reason
    seconds = max(0, (now_nanos - since) // 1_000_000_000)
    return (
        f"the DR site {vm.policy.replica_server} has not answered for {seconds} s ({why}); "
        "replication goes on as soon as it answers"
    )


def pending_bytes(vm: VmReplication) -> int:
    """The bytes its disks' open tracking generations hold (the next delta, as of now)."""
    total = 0
    for device in vm.disks.values():
        tracker = device.tracker
        total += sum(count for _first, count in tracker.changed_runs()) * tracker.block_size
    return total
