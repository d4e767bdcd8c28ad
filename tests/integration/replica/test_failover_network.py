"""The network follows the VM, through a real policy service on a real etcd: a test failover touches
no record; a DR host with no PA registered is refused before anything changes (the routing table,
the replica and its points byte for byte); an unplanned failover moves the VM's record to the DR
host's PA with the failover CA and a cancel moves it back; a planned failover and the failover back
move it there and back. The guest's kernel command line carries the settings of where it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from overland.traces import load_spans
from overland.v1 import policy_pb2, policy_pb2_grpc, replica_pb2, types_pb2, vm_pb2
from services.common.config import ServerConfig
from services.common.etcd_auth import POLICY_USER, ROOT_USER
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.policy import PolicyConfig, PolicyServer
from services.policy import create_server as create_policy
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS, start_test_etcd
from tests.integration.replica.conftest import make_disk, qemu_io
from tests.integration.replica.failover_sites import Site, define_and_replicate, failed, raw_of, site
from tests.unit.policy.support import PA_1, PA_2, VSID, seed
from tests.unit.policy.test_record_move import register_host, snapshot

pytestmark = [pytest.mark.qemu, pytest.mark.etcd]

VM = "vm1"
CA, FAILOVER_CA = "192.0.2.10", "192.0.2.20"
MAC = "52:54:00:0b:00:0a"
TEST_VSID = 5002
MiB = 1024 * 1024


class Network:
    def __init__(self, etcd: EtcdProcess, policy: PolicyServer):
        # Root, as an observer; the policy service is its own etcd user.
        self.kv = EtcdKV.from_config(etcd.etcd_config(ROOT_USER, timeout=ETCD_TEST_DEADLINE_SECONDS))
        self.policy = policy
        self.stub = policy_pb2_grpc.PolicyServiceStub(grpc.insecure_channel(f"127.0.0.1:{policy.port}"))

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.policy.port}"

    def record(self, ca: str) -> types_pb2.LookupRecord | None:
        """The VSID's record at ``ca``, if there is one."""
        listed = self.stub.ListLookupRecords(policy_pb2.ListLookupRecordsRequest(vsid=VSID), timeout=10)
        return next((r for r in listed.lookup_records if r.ca == ca), None)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Network, Site, Site, Path]]:
    # The sites write their spans here (they inherit the environment).
    monkeypatch.setenv("OVERLAND_SPAN_FILE", str(tmp_path / "spans.jsonl"))
    etcd = start_test_etcd(tmp_path / "etcd")
    policy, _port = create_policy(
        PolicyConfig(
            server=ServerConfig(bind="127.0.0.1:0"),
            etcd=etcd.etcd_config(POLICY_USER, timeout=ETCD_TEST_DEADLINE_SECONDS),
        )
    )
    network = Network(etcd, policy)
    seed(network.stub)
    add_test_subnet(network.stub)
    # Site A's host registered its PA (its agent would); site B's registers later in the test.
    register_host(network.kv, "site-a-host", PA_1)
    network.stub.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(
            lookup_record=types_pb2.LookupRecord(ca=CA, vsid=VSID, mac=MAC, pa=PA_1)
        )
    )
    a = site(tmp_path, "site-a", "site-b", "--policy-endpoint", network.endpoint)
    b = site(tmp_path, "site-b", "site-a", "--policy-endpoint", network.endpoint)
    a.process.start()
    b.process.start()
    disk = make_disk(tmp_path / "vm1.vhd", 8 * MiB)
    try:
        yield network, a, b, disk
    finally:
        a.process.stop()
        b.process.stop()
        network.kv.close()
        policy.stop()
        etcd.close()


def add_test_subnet(stub: policy_pb2_grpc.PolicyServiceStub) -> None:
    """The isolated VSID a test failover runs on (nothing else routes to it)."""
    from tests.unit.policy.support import add_tenant  # noqa: PLC0415 (one test needs it)

    add_tenant(stub, TEST_VSID, "Contoso test", ("192.0.2.0/24",))


def nic() -> replica_pb2.VmNic:
    return replica_pb2.VmNic(
        mac=MAC,
        vsid=VSID,
        ca=CA,
        addresses=[f"{CA}/24"],
        gateway="192.0.2.1",
        failover_addresses=[f"{FAILOVER_CA}/24", "198.51.100.20/24"],
        failover_gateway="192.0.2.1",
        failover_dns=["192.0.2.53"],
        failover_ca=FAILOVER_CA,
        test_vsid=TEST_VSID,
    )


def test_the_records_follow_the_vm(world: tuple[Network, Site, Site, Path]) -> None:
    network, a, b, disk = world
    define_and_replicate(a, b, VM, disk, nics=(nic(),), points=2)
    # Where a VM runs decides its guest settings: its own at A, the failover ones at B.
    assert f"overland.nic0.ip={CA}/24 " in a.vm(VM).kernel_command_line + " "
    assert f"overland.nic0.ip={FAILOVER_CA}/24,198.51.100.20/24" in b.vm(VM).kernel_command_line

    # A test failover touches no production record; its NIC is on the test VSID.
    table = snapshot(network.kv)
    b.failover(VM, as_test=True, leave_off=True)
    assert f"overland.nic0.ip={FAILOVER_CA}/24" in b.vm(f"{VM} - Test").kernel_command_line
    b.replicas.StopVmFailover(replica_pb2.StopVmFailoverRequest(vm_name=VM), timeout=60)
    assert snapshot(network.kv) == table

    # B's host has no PA registered: refused before anything changes.
    replica = b.store / VM / "disks" / "d0.vhd"
    before = raw_of(str(replica), b.state.parent / "before.raw", "vpc").read_bytes()
    points = b.replicas.ListRecoveryPoints(replica_pb2.ListRecoveryPointsRequest(vm_name=VM), timeout=10)
    error = failed(lambda: b.failover(VM, force=True, leave_off=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'site-b-host'" in str(error.details())
    assert "no PA registered" in str(error.details())
    assert snapshot(network.kv) == table
    assert raw_of(str(replica), b.state.parent / "after.raw", "vpc").read_bytes() == before
    assert (
        b.replicas.ListRecoveryPoints(replica_pb2.ListRecoveryPointsRequest(vm_name=VM), timeout=10) == points
    )
    assert b.status(VM).state == replica_pb2.FAILOVER_STATE_REPLICA
    assert [e.operation for e in b.history(VM)] == ["start test failover", "stop test failover"]

    # Registered: an unplanned failover (forced: A answers) brings the record to B with the failover CA.
    register_host(network.kv, "site-b-host", PA_2)
    forced = b.failover(VM, force=True, leave_off=True)
    assert any("two copies" in w for w in forced.warnings)
    assert list(forced.moved_records) == [f"{VSID}/{FAILOVER_CA}"]
    moved = network.record(FAILOVER_CA)
    assert moved is not None
    assert (moved.pa, moved.mac) == (PA_2, MAC)
    assert network.record(CA) is None
    # Cancel moves it back.
    b.replicas.StopVmFailover(replica_pb2.StopVmFailoverRequest(vm_name=VM), timeout=60)
    back = network.record(CA)
    assert back is not None
    assert back.pa == PA_1
    assert network.record(FAILOVER_CA) is None

    # Planned failover to B and back to A: there and back again.
    qemu_io(a.nbd(f"{VM}/d0"), "write -P 0x42 1M 1M", fmt="raw")
    a.failover(VM, prepare=True)
    b.failover(VM, leave_off=True)
    there = network.record(FAILOVER_CA)
    assert there is not None
    assert there.pa == PA_2
    b.failover(VM, prepare=True)
    a.failover(VM, leave_off=True)
    home = network.record(CA)
    assert home is not None
    assert home.pa == PA_1
    assert network.record(FAILOVER_CA) is None
    assert a.vm(VM).replication_mode == vm_pb2.REPLICATION_MODE_PRIMARY

    # Each failover is a span, its steps spans under it (the batch is written when B stops).
    b.process.stop()
    spans = load_spans([disk.parent / "spans.jsonl"])
    unplanned = [
        span
        for span in spans
        if span["name"] == "replica.failover"
        and span["attributes"].get("overland.failover.operation") == "unplanned failover"
        and span.get("status") != "ERROR"
    ]
    assert len(unplanned) == 1
    steps = {s["name"] for s in spans if s.get("parent_span_id") == unplanned[0]["span_id"]}
    assert steps >= {
        "replica.failover.probe",
        "replica.failover.point_disks",
        "replica.failover.records_moved",
    }
