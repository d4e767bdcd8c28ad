"""What a VM's next cycle does, from its record and its initial-replication method."""

from __future__ import annotations

from pathlib import Path

import pytest

from overland.v1 import replica_pb2
from services.replica.primary.cycle import CycleKind, kind_of
from services.replica.primary.replication import VmReplication
from services.replica.settings import CompressionMode, InitialMethod, ReplicationPolicy
from services.replica.states import Record, ReplicationState


def replication(record: Record, method: InitialMethod = InitialMethod.NETWORK) -> VmReplication:
    policy = ReplicationPolicy(300, 0, CompressionMode.AUTO, 0, "dr.example:50063", method, "")
    request = replica_pb2.EnableReplicationRequest(vm=replica_pb2.VirtualMachine(name="vm1"))
    return VmReplication(request, policy, record, {}, Path("unused"))


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        (InitialMethod.NETWORK, CycleKind.INITIAL),
        (InitialMethod.EXTERNAL_MEDIA, CycleKind.EXPORT),
        (InitialMethod.EXISTING_COPY, CycleKind.EXISTING_COPY),
    ],
)
def test_before_the_initial_replication_the_method_decides(method: InitialMethod, kind: CycleKind) -> None:
    record = Record(state=ReplicationState.READY_FOR_INITIAL_REPLICATION)
    assert kind_of(replication(record, method)) is kind


def test_after_the_initial_replication_deltas_unless_a_resync_is_due() -> None:
    done = Record(state=ReplicationState.REPLICATING, initial_done=True)
    assert kind_of(replication(done)) is CycleKind.DELTA
    assert kind_of(
        replication(Record(state=ReplicationState.REPLICATING, initial_done=True, resync_required=True))
    ) is (CycleKind.RESYNC)
    forced = replication(done)
    forced.force_resync = True
    assert kind_of(forced) is CycleKind.RESYNC


def test_an_exported_replica_waits_for_its_import() -> None:
    waiting = Record(state=ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION)
    assert kind_of(replication(waiting, InitialMethod.EXTERNAL_MEDIA)) is CycleKind.AWAIT_IMPORT


def test_which_kinds_carry_the_whole_disk_start_an_initial_replication_or_compare_hashes() -> None:
    assert {k for k in CycleKind if k.full} == {CycleKind.INITIAL, CycleKind.EXPORT}
    assert {k for k in CycleKind if k.initial} == {
        CycleKind.INITIAL,
        CycleKind.EXPORT,
        CycleKind.EXISTING_COPY,
    }
    assert {k for k in CycleKind if k.compares_hashes} == {CycleKind.RESYNC, CycleKind.EXISTING_COPY}
