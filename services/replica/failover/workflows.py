"""The failover workflows (docs/failover.md), one function each, over a ``SiteFailover``.

Each checks the state (``SiteFailover.check``: FAILED_PRECONDITION naming it) and everything else it
depends on (the recovery point, the replica disks, this host's PA) before it changes anything, does
its steps, undoes them if one fails, and records the transition. The steps' order is what keeps a
failure harmless: e.g. an unplanned failover makes its point disks (nothing else changed yet), then
refuses deltas, then switches the replica VM onto them, moves the lookup records and starts the VM.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from overland.v1 import replica_pb2
from services.common.errors import ServiceError
from services.replica.disks import export_name
from services.replica.dr.point_disks import check_point
from services.replica.dr.store import VmStore
from services.replica.errors import IllegalFailover, PrimaryAnswers
from services.replica.failover.machine import Operation, Phase, start_operation, stop_operation
from services.replica.failover.network import MovedRecord, record_moves
from services.replica.failover.record import FailoverRecord
from services.replica.failover.replica_vm import TEST_SUFFIX, replica_config, replica_lock, with_disks
from services.replica.settings import disk_format
from services.replica.vhd import DiskFormat
from services.replica.vm.definition import NetworkSettings
from services.replica.vm.host import RunState

if TYPE_CHECKING:
    from services.replica.failover.site import SiteFailover

log = logging.getLogger(__name__)

TEST = "test"
FAILOVER = "failover"


def _settings(store: VmStore, endpoint: str) -> replica_pb2.ReplicationSettings:
    settings = replica_pb2.ReplicationSettings.FromString(store.state.settings)
    settings.replica_server = endpoint
    return settings


def _network(site: SiteFailover, vm_name: str) -> NetworkSettings:
    """The settings the VM runs with at this site (the failover ones at its DR site)."""
    return site.host.get(vm_name).record.network


def _check_host(site: SiteFailover, config: replica_pb2.VirtualMachine, network: NetworkSettings) -> None:
    """This host must have a PA registered if the VM has records to bring here."""
    if site.policy is not None and record_moves(config, network):
        site.policy.host_pa()


def _move_here(
    site: SiteFailover, config: replica_pb2.VirtualMachine, network: NetworkSettings
) -> list[MovedRecord]:
    if site.policy is None:
        return []
    with site.step("records_moved"):
        return site.policy.move_here(record_moves(config, network))


def _replica_vm(site: SiteFailover, record: FailoverRecord, store: VmStore) -> replica_pb2.VirtualMachine:
    """The replica VM's definition on its replica disks, defined here if it was not yet."""
    site.replica_committed(record.primary, record.vm_name, store)
    site.host.get(record.vm_name)  # NOT_FOUND when it could not be defined
    return replica_config(store)


# ---- Start-VMFailover ------------------------------------------------------------------------------


def start(
    site: SiteFailover, request: replica_pb2.StartVmFailoverRequest, who: str
) -> replica_pb2.VmFailover:
    vm_name = request.vm_name
    with site.exclusive(vm_name):
        record = site.record(vm_name)
        store = site.store(record) if record.state.phase in (Phase.REPLICA,) else None
        operation = start_operation(
            record.state,
            as_test=request.as_test,
            prepare=request.prepare,
            planned_ready=store is not None and store.state.planned,
        )
        site.check(record, operation)
        with site.span(operation, vm_name, request.recovery_point):
            warnings: list[str] = []
            if operation is Operation.START_TEST:
                assert store is not None
                point = _start_test(site, record, store, request.recovery_point, request.leave_off)
            elif operation is Operation.PREPARE:
                point = _prepare(site, record)
            elif operation is Operation.PLANNED_FAILOVER:
                assert store is not None
                point = _planned(site, record, store, request.leave_off, warnings)
            else:
                assert store is not None
                point = _unplanned(site, record, store, request, warnings)
            site.transition(record, operation, who, point, "; ".join(warnings))
        return site.view(vm_name, warnings)


def _start_test(
    site: SiteFailover, record: FailoverRecord, store: VmStore, point: int, leave_off: bool
) -> int:
    """ "<name> - Test" on point disks at ``point``, its NICs on their test VSIDs; replication goes on."""
    config = _replica_vm(site, record, store)
    missing = [i for i, nic in enumerate(config.nics) if not nic.test_vsid]
    if missing:
        raise IllegalFailover(
            f"VM {record.vm_name!r} has no test VSID on NIC {missing[0]} (vm.nics[{missing[0]}].test_vsid): "
            "a test failover runs on an isolated network"
        )
    test_name = f"{record.vm_name}{TEST_SUFFIX}"
    if site.host.definition_of(test_name) is not None:
        raise IllegalFailover(f"a VM named {test_name!r} already exists at this site")
    with site.step("point_disks"):
        disks = store.create_point_disks(
            TEST, point, {d: export_name(test_name, d) for d in store.state.disk_sizes}
        )
    try:
        test_config = with_disks(config, {d: path for d, (_export, path) in disks.disks.items()})
        test_config.name = test_name
        site.host.create(test_config, network=NetworkSettings.TEST)
        try:
            if not leave_off:
                with site.step("vm_started"):
                    site.host.start(test_name)
        except BaseException:
            site.delete_vm(test_name)
            raise
    except BaseException:
        store.drop_point_disks(TEST)
        raise
    record.test_vm, record.test_point = test_name, disks.sequence
    return disks.sequence


def _prepare(site: SiteFailover, record: FailoverRecord) -> int:
    """At the primary: the VM off and locked, then the last cycle (its header says planned)."""
    replication = site.manager.get(record.vm_name)
    defined = site.host.definition_of(record.vm_name) is not None
    if defined:
        reason = f"prepared for a planned failover to {replication.policy.replica_server}"
        site.host.set_lock(record.vm_name, reason, require_off=True)
    try:
        with site.step("final_cycle"):
            record.final_cycle_bytes = site.manager.prepare(record.vm_name)
    except BaseException:
        if defined:
            site.host.set_lock(record.vm_name, "")
        raise
    record.peer_endpoint = replication.policy.replica_server
    return site.manager.get(record.vm_name).last_sequence


def _planned(
    site: SiteFailover, record: FailoverRecord, store: VmStore, leave_off: bool, warnings: list[str]
) -> int:
    """At the DR site after a prepare: the old primary adopts its disk as the replica, this site
    becomes the primary (no copy), the records come here and the VM starts on the latest point."""
    endpoint = store.state.primary_endpoint
    config = _replica_vm(site, record, store)
    network = _network(site, record.vm_name)
    _check_host(site, config, network)
    with site.step("adopt"):
        site.peers.adopt(
            endpoint,
            replica_pb2.AdoptReplicaRequest(
                vm_name=record.vm_name,
                sequence=store.state.committed,
                disk_sizes=store.state.disk_sizes,
                planned=True,
                primary_endpoint=site.config.endpoint,
            ),
        )
    # The old primary keeps its disk as our replica now: there is no way back but a failover.
    store.set_refusal(f"VM {record.vm_name!r} failed over to this site (planned): this site is its primary")
    site.host.redefine(record.vm_name, config, replica=False, locked_reason="")
    try:
        site.manager.adopt_primary(
            replica_pb2.EnableReplicationRequest(vm=config, settings=_settings(store, endpoint)),
            store.state.committed,
            resync=False,
        )
    except BaseException:
        site.host.redefine(
            record.vm_name, replica=True, locked_reason=replica_lock(record.vm_name, record.primary)
        )
        raise
    record.peer_endpoint = endpoint
    _finish_failover(site, record, config=config, network=network, leave_off=leave_off, warnings=warnings)
    return store.state.committed


def _finish_failover(
    site: SiteFailover,
    record: FailoverRecord,
    *,
    config: replica_pb2.VirtualMachine,
    network: NetworkSettings,
    leave_off: bool,
    warnings: list[str],
) -> None:
    """After the point of no return: the records and the start are told as warnings if they fail."""
    try:
        record.moved = _move_here(site, config, network)
    except ServiceError as error:
        warnings.append(f"the VM's lookup records were not moved: {error.message}")
    if not leave_off:
        try:
            with site.step("vm_started"):
                site.host.start(record.vm_name)
        except ServiceError as error:
            warnings.append(f"the VM did not start: {error.message}")
    for warning in warnings:
        log.warning("failover warning", extra={"vm": record.vm_name, "warning": warning})


def _unplanned(
    site: SiteFailover,
    record: FailoverRecord,
    store: VmStore,
    request: replica_pb2.StartVmFailoverRequest,
    warnings: list[str],
) -> int:
    """At the DR site: the VM at a recovery point on point disks, deltas refused, records here."""
    config = _replica_vm(site, record, store)
    network = _network(site, record.vm_name)
    _check_host(site, config, network)
    sequence = request.recovery_point or store.state.committed
    if request.recovery_point:
        check_point(store.state, record.vm_name, sequence)
    endpoint = store.state.primary_endpoint
    with site.step("probe"):
        answers = site.peers.answers(endpoint, record.vm_name)
    if answers and not request.force:
        raise PrimaryAnswers(
            f"the primary of VM {record.vm_name!r} at {endpoint} answers: an unplanned failover is for a "
            "primary that is lost (force overrides this, and two copies of the VM may then run)"
        )
    if answers:
        warnings.append(f"forced while the primary at {endpoint} answers: two copies of the VM may run")
    with site.step("point_disks"):
        disks = store.create_point_disks(
            FAILOVER, sequence, {d: export_name(record.vm_name, d) for d in store.state.disk_sizes}
        )
    moved: list[MovedRecord] = []
    try:
        store.set_refusal(
            f"VM {record.vm_name!r} failed over to this site at recovery point {disks.sequence}: "
            "cancel or complete the failover first"
        )
        site.host.redefine(
            record.vm_name,
            with_disks(config, {d: path for d, (_export, path) in disks.disks.items()}),
            locked_reason="",
        )
        moved = _move_here(site, config, network)
        if not request.leave_off:
            with site.step("vm_started"):
                site.host.start(record.vm_name)
    except BaseException:
        _back_to_replica(site, record, store, config, moved)
        raise
    record.point, record.moved = disks.sequence, moved
    record.peer_endpoint = endpoint
    return disks.sequence


def _back_to_replica(
    site: SiteFailover,
    record: FailoverRecord,
    store: VmStore,
    config: replica_pb2.VirtualMachine,
    moved: list[MovedRecord],
) -> None:
    """Undo an unplanned failover: the VM off and on its replica disks again, locked, the records
    back where they were, the point disks gone, deltas accepted."""
    site.stop_vm(record.vm_name)
    if moved and site.policy is not None:
        site.policy.move_back(moved)
    site.host.redefine(record.vm_name, config, locked_reason=replica_lock(record.vm_name, record.primary))
    store.drop_point_disks(FAILOVER)
    store.set_refusal("")


# ---- Stop-VMFailover, Complete-VMFailover, Set-VMReplication -Reverse --------------------------------


def stop(site: SiteFailover, vm_name: str, who: str) -> replica_pb2.VmFailover:
    with site.exclusive(vm_name):
        record = site.record(vm_name)
        operation = stop_operation(record.state)
        site.check(record, operation)
        with site.span(operation, vm_name):
            point = 0
            if operation is Operation.STOP_TEST:
                point = record.test_point
                site.delete_vm(record.test_vm)
                site.store(record).drop_point_disks(TEST)
                record.test_vm, record.test_point = "", 0
            elif operation is Operation.CANCEL_FAILOVER:
                store = site.store(record)
                point = record.point
                _back_to_replica(site, record, store, replica_config(store), record.moved)
                record.point, record.moved = 0, []
            else:
                site.manager.cancel_prepare(vm_name)
                if site.host.definition_of(vm_name) is not None:
                    site.host.set_lock(vm_name, "")
            site.transition(record, operation, who, point)
        return site.view(vm_name)


def complete(site: SiteFailover, vm_name: str, who: str) -> replica_pb2.VmFailover:
    """The point becomes the replica (merged under the running VM); the other points go."""
    with site.exclusive(vm_name):
        record = site.record(vm_name)
        site.check(record, Operation.COMPLETE)
        with site.span(Operation.COMPLETE, vm_name, record.point):
            store = site.store(record)
            with site.step("merge"):
                replicas = store.complete_point_disks(FAILOVER)
            vm = site.host.get(vm_name)
            site.host.redefine(vm_name, with_disks(vm.record.config, replicas))
            store.set_refusal(
                f"VM {vm_name!r} failed over to this site and the failover was completed: "
                "reverse the replication (SetVmReplication reverse)"
            )
            site.transition(record, Operation.COMPLETE, who, record.point)
        return site.view(vm_name)


def reverse(site: SiteFailover, vm_name: str, who: str) -> replica_pb2.VmFailover:
    """After a completed failover: the old primary adopts its disk (it diverged: the first cycle
    resynchronizes by block hashes), and this site replicates the VM to it."""
    with site.exclusive(vm_name):
        record = site.record(vm_name)
        site.check(record, Operation.REVERSE)
        with site.span(Operation.REVERSE, vm_name):
            store = site.store(record)
            endpoint = record.peer_endpoint or store.state.primary_endpoint
            config = site.host.get(vm_name).record.config
            with site.step("adopt"):
                site.peers.adopt(
                    endpoint,
                    replica_pb2.AdoptReplicaRequest(
                        vm_name=vm_name,
                        sequence=store.state.committed,
                        disk_sizes=store.state.disk_sizes,
                        planned=False,
                        primary_endpoint=site.config.endpoint,
                    ),
                )
            store.set_refusal(f"VM {vm_name!r} is replicated from this site now")
            site.host.redefine(vm_name, replica=False)
            site.manager.adopt_primary(
                replica_pb2.EnableReplicationRequest(vm=config, settings=_settings(store, endpoint)),
                store.state.committed,
                resync=True,
            )
            record.peer_endpoint = endpoint
            site.transition(record, Operation.REVERSE, who, store.state.committed)
        return site.view(vm_name)


# ---- AdoptReplica (the other site's call) ----------------------------------------------------------


def adopt(
    site: SiteFailover, caller: str, request: replica_pb2.AdoptReplicaRequest
) -> replica_pb2.AdoptReplicaResponse:
    """This site was the VM's primary; the caller is now. Stop replicating and keep the disks as the
    caller's replica at ``request.sequence``: after a planned failover they are exactly that (they
    have not changed since the prepare's cut, which the tracking log shows); after an unplanned one
    they diverged, and the caller's first cycle resynchronizes them."""
    vm_name = request.vm_name
    with site.exclusive(vm_name):
        record = site.record(vm_name)
        operation = Operation.ADOPT_PLANNED if request.planned else Operation.ADOPT_DIVERGED
        site.check(record, operation)
        with site.span(operation, vm_name, request.sequence):
            replication = site.manager.get(vm_name)
            if request.planned and replication.last_sequence != request.sequence:
                raise IllegalFailover(
                    f"VM {vm_name!r} was prepared at delta {replication.last_sequence}, "
                    f"but the DR site committed {request.sequence}"
                )
            if request.planned and site.manager.changed_since_cut(vm_name):
                raise IllegalFailover(f"the disks of VM {vm_name!r} changed since the prepare: prepare again")
            defined = site.host.definition_of(vm_name) is not None
            if defined and site.host.get(vm_name).state is not RunState.OFF:
                raise IllegalFailover(
                    f"VM {vm_name!r} runs at this site: stop it before the replication is reversed"
                )
            raw = [d.name for d in replication.request.vm.disks if disk_format(d) is not DiskFormat.VHD]
            if raw:
                raise IllegalFailover(
                    f"disk {raw[0]!r} of VM {vm_name!r} is a raw file; a replica is kept as VHDs: "
                    "reverse the replication by a new one (disable it, enable it at the new primary)"
                )
            disks = {d.name: Path(d.path) for d in replication.request.vm.disks}
            if dict(request.disk_sizes) != {
                name: device.virtual_size for name, device in replication.disks.items()
            }:
                raise IllegalFailover(
                    f"the DR site's disks of VM {vm_name!r} ({dict(request.disk_sizes)}) are not this site's"
                )
            if site.receiver is None:
                raise IllegalFailover("this site keeps no replicas (no allow-list): it cannot adopt one")
            vm = replication.request.vm
            site.manager.disable(vm_name)
            site.receiver.store(caller, vm_name).adopt(request.sequence, disks, vm, request.primary_endpoint)
            if defined:
                site.host.redefine(vm_name, replica=True, locked_reason=replica_lock(vm_name, caller))
            record.primary, record.peer_endpoint = caller, request.primary_endpoint
            record.moved, record.point = [], 0
            site.transition(record, operation, caller, request.sequence)
        return replica_pb2.AdoptReplicaResponse(vm=vm)
