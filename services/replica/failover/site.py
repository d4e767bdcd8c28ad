"""Failover at a site: the shell around the state machine (``machine``), one VM at a time.

``SiteFailover`` decides with ``machine.apply`` what an operation may do in the VM's state, then does
it with the site's parts: the replica store (point disks, refusing deltas, adoption), the VM runtime
(the failover VM, its disks, lock and network settings), the replication manager (prepare, a reversed
replication), the other site (``peer``: is the primary there, adopt) and the policy service
(``network``: the lookup records follow the VM). Everything a call checks is checked before it
changes anything; a step that fails undoes the steps before it. Every transition is recorded
(``record``) with who asked and which recovery point. The workflows themselves are in
``workflows``; this module holds the state, the records and the calls' entry points.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from overland.v1 import replica_pb2
from services.common.errors import ServiceError
from services.replica.config import ReplicaConfig
from services.replica.dr.servicer import ReceiverServicer
from services.replica.dr.store import VmStore
from services.replica.errors import IllegalFailover, UnknownVm
from services.replica.failover import workflows
from services.replica.failover.machine import (
    FailoverState,
    History,
    IllegalOperation,
    Operation,
    Phase,
    apply,
)
from services.replica.failover.network import PolicyRecords
from services.replica.failover.peer import Peers
from services.replica.failover.record import FailoverRecord, load_all
from services.replica.failover.replica_vm import TEST_SUFFIX, replica_config, replica_lock
from services.replica.primary.manager import ReplicationManager
from services.replica.telemetry import ReplicaTelemetry
from services.replica.vm.definition import NetworkSettings
from services.replica.vm.host import RunState, VmHost

log = logging.getLogger(__name__)

FAILOVER_SPAN = "replica.failover"


class SiteFailover:
    """The failover of the site's VMs. Thread-safe: one operation per VM at a time."""

    def __init__(
        self,
        config: ReplicaConfig,
        *,
        host: VmHost,
        manager: ReplicationManager,
        receiver: ReceiverServicer | None,
        telemetry: ReplicaTelemetry | None = None,
        peers: Peers | None = None,
        policy: PolicyRecords | None = None,
        clock: Callable[[], int] = time.time_ns,
    ):
        self.config = config
        self.host = host
        self.manager = manager
        self.receiver = receiver
        self.telemetry = telemetry or ReplicaTelemetry(None)
        self.peers = peers or Peers(config.site_name, config.client_tls)
        self.policy = policy
        if policy is None and config.policy_endpoint:
            self.policy = PolicyRecords(config.policy_endpoint, config.policy_tls, config.host_name)
        self.clock = clock
        self.directory = config.state_dir / "failover"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._records = load_all(self.directory)
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        if receiver is not None:
            receiver.committed = self.replica_committed
            receiver.adopter = self.adopt_call
            self._reconcile(receiver)

    def close(self) -> None:
        if self.policy is not None:
            self.policy.close()

    # ---- state -----------------------------------------------------------------------------------

    @contextmanager
    def exclusive(self, vm_name: str) -> Iterator[None]:
        """One failover operation per VM at a time."""
        with self._lock:
            lock = self._locks.setdefault(vm_name, threading.Lock())
        with lock:
            yield

    def record(self, vm_name: str) -> FailoverRecord:
        """The VM's record, or a new one (not saved) in the state the site's parts say it is in."""
        found = self._records.get(vm_name)
        if found is not None:
            return found
        if self.manager.has(vm_name):
            return FailoverRecord(History(vm_name, FailoverState(Phase.PRIMARY)))
        kept = self.receiver.find(vm_name) if self.receiver is not None else None
        if kept is not None:
            return FailoverRecord(History(vm_name, FailoverState(Phase.REPLICA)), primary=kept[0])
        raise UnknownVm(
            f"VM {vm_name!r} is neither replicated from this site nor kept here as a replica: "
            "nothing to fail over"
        )

    def save(self, record: FailoverRecord) -> None:
        record.save(self.directory)
        self._records[record.vm_name] = record

    def check(self, record: FailoverRecord, operation: Operation) -> None:
        """FAILED_PRECONDITION naming the state unless the state allows ``operation``."""
        try:
            apply(record.vm_name, record.state, operation)
        except IllegalOperation as error:
            raise IllegalFailover(str(error)) from None

    def transition(
        self, record: FailoverRecord, operation: Operation, who: str, point: int = 0, detail: str = ""
    ) -> None:
        """Record that ``operation`` happened (it was checked before it started) and save."""
        record.history = record.history.record(
            operation, time_nanos=self.clock(), who=who, recovery_point=point, detail=detail
        )
        self.save(record)
        log.info(
            "failover transition",
            extra={
                "vm": record.vm_name,
                "operation": operation.value,
                "who": who,
                "to": record.state.describe(),
                "point": point,
            },
        )

    def store(self, record: FailoverRecord) -> VmStore:
        """The replica the VM's record names (a replica phase)."""
        if self.receiver is not None:
            if record.primary:
                return self.receiver.store(record.primary, record.vm_name)
            kept = self.receiver.find(record.vm_name)
            if kept is not None:
                record.primary = kept[0]
                return kept[1]
        raise UnknownVm(f"this site keeps no replica of VM {record.vm_name!r}")

    @contextmanager
    def span(self, operation: Operation, vm_name: str, point: int = 0) -> Iterator[None]:
        attributes = {"overland.vm": vm_name, "overland.failover.operation": operation.value}
        if point:
            attributes["overland.recovery_point"] = str(point)
        with self.telemetry.phase(FAILOVER_SPAN, attributes):
            yield

    def step(self, name: str) -> AbstractContextManager[None]:
        """A span for one step of a failover (its time shows in the trace)."""
        return self.telemetry.phase(f"{FAILOVER_SPAN}.{name}")

    # ---- views -----------------------------------------------------------------------------------

    def view(self, vm_name: str, warnings: list[str] | None = None) -> replica_pb2.VmFailover:
        record = self.record(vm_name)
        return replica_pb2.VmFailover(
            vm_name=vm_name,
            state=int(record.state.phase),  # type: ignore[arg-type]
            test_vm_name=record.test_vm if record.state.test else "",
            recovery_point=record.point,
            test_recovery_point=record.test_point if record.state.test else 0,
            peer_endpoint=record.peer_endpoint,
            warnings=warnings or [],
            moved_records=[m.label() for m in record.moved],
            final_cycle_bytes=record.final_cycle_bytes,
        )

    def recovery_points(self, vm_name: str) -> list[replica_pb2.RecoveryPoint]:
        """The VM's recovery points: the DR site's where this site replicates the VM, its own where
        it keeps the replica (an administrator picks one to fail over to)."""
        if self.manager.has(vm_name) or self.receiver is None:
            return self.manager.recovery_points(vm_name)
        kept = self.receiver.find(vm_name)
        if kept is None:
            return self.manager.recovery_points(vm_name)
        return kept[1].recovery_points()

    def history(self, vm_name: str) -> list[replica_pb2.FailoverEvent]:
        record = self.record(vm_name)
        return [
            replica_pb2.FailoverEvent(
                time_unix_nanos=t.time_nanos,
                who=t.who,
                operation=t.operation.value,
                from_state=int(t.before.phase),  # type: ignore[arg-type]
                to_state=int(t.after.phase),  # type: ignore[arg-type]
                recovery_point=t.recovery_point,
                detail=t.detail,
            )
            for t in record.history.transitions
        ]

    # ---- the replica VM --------------------------------------------------------------------------

    def replica_committed(self, primary: str, vm_name: str, store: VmStore) -> None:
        """After a commit: the replica VM is defined here (locked), as Hyper-V shows a replica VM."""
        if self.host.definition_of(vm_name) is not None:
            return
        try:
            self.host.create(
                replica_config(store),
                network=NetworkSettings.FAILOVER,
                replica=True,
                locked_reason=replica_lock(vm_name, primary),
            )
        except ServiceError as error:
            log.warning("the replica VM could not be defined", extra={"vm": vm_name, "error": error.message})

    def _reconcile(self, receiver: ReceiverServicer) -> None:
        """At start: point disks a crash left without a failover that uses them go (their VM too)."""
        for _primary, store in receiver.with_point_disks():
            record = self._records.get(store.vm_name)
            used = set()
            if record is not None and record.state.test:
                used.add("test")
            if record is not None and record.state.phase is Phase.FAILED_OVER:
                used.add("failover")
            for tag in set(store.point_disks) - used:
                log.warning("dropping point disks no failover uses", extra={"vm": store.vm_name, "tag": tag})
                if tag == "test":
                    self.delete_vm(f"{store.vm_name}{TEST_SUFFIX}")
                store.drop_point_disks(tag)

    def delete_vm(self, name: str) -> None:
        """Turn VM ``name`` off if it runs, and remove it (its ports go; its disks stay)."""
        if self.host.definition_of(name) is None:
            return
        if self.host.get(name).state is not RunState.OFF:
            self.host.stop(name, turn_off=True)
        self.host.delete(name)

    def stop_vm(self, name: str) -> None:
        """Turn VM ``name`` off if it runs (a failover being ended pulls the plug, as Hyper-V does)."""
        if self.host.definition_of(name) is not None and self.host.get(name).state is not RunState.OFF:
            self.host.stop(name, turn_off=True)

    # ---- the calls (``workflows`` does each) -------------------------------------------------------

    def start(self, request: replica_pb2.StartVmFailoverRequest, who: str) -> replica_pb2.VmFailover:
        return workflows.start(self, request, who)

    def stop(self, vm_name: str, who: str) -> replica_pb2.VmFailover:
        return workflows.stop(self, vm_name, who)

    def complete(self, vm_name: str, who: str) -> replica_pb2.VmFailover:
        return workflows.complete(self, vm_name, who)

    def reverse(self, vm_name: str, who: str) -> replica_pb2.VmFailover:
        return workflows.reverse(self, vm_name, who)

    def adopt_call(
        self, caller: str, request: replica_pb2.AdoptReplicaRequest
    ) -> replica_pb2.AdoptReplicaResponse:
        return workflows.adopt(self, caller, request)
