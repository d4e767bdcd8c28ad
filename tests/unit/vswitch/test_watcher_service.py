"""The agent's gRPC API over a MemoryKV: status, table dump, datapath delegation and table-only mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from overland.v1 import vswitch_pb2, vswitch_pb2_grpc
from services.common.config import ServerConfig
from services.common.memory_kv import MemoryKV
from services.vswitch.config import AgentConfig, load_config
from services.vswitch.server import VswitchServer, create_server
from tests.unit.sdk.cli_runner import invoke_json
from tests.unit.vswitch.agent_helpers import RecordingDatapath, put, wait_until
from tests.unit.vswitch.table_factory import domain, provider, record, route, subnet


def _start(table_only: bool) -> tuple[VswitchServer, MemoryKV, RecordingDatapath]:
    kv = MemoryKV(progress_interval=0.05)
    put(kv, provider("198.18.0.1"), domain("rd-blue"), subnet(4096, "rd-blue", "192.0.2.0/24"))
    put(
        kv,
        record(4096, "rd-blue", "192.0.2.1", "198.18.0.1"),
        route("rd-blue", 4096, "0.0.0.0/0", "192.0.2.1"),
    )
    datapath = RecordingDatapath()
    config = AgentConfig(host_name="host-1", pa_ip="198.18.0.1", table_only=table_only, server=ServerConfig())
    server, _port = create_server(config, kv=kv, datapath_factory=lambda _config: datapath)
    return server, kv, datapath


Running = tuple[VswitchServer, vswitch_pb2_grpc.VswitchServiceStub]


@pytest.fixture(params=[True, False], ids=["table-only", "datapath"])
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    server, kv, _ = _start(request.param)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        wait_until(lambda: server.agent.applied_revision == kv.current_revision(), what="synced")
        yield server, vswitch_pb2_grpc.VswitchServiceStub(channel)
    finally:
        channel.close()
        server.stop()
        kv.close()


def _violations(error: grpc.RpcError) -> set[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = set()
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found |= {v.field for v in bad_request.field_violations}
    return found


def test_status_and_dump_show_the_applied_table(running: Running) -> None:
    server, stub = running
    status = stub.GetAgentStatus(vswitch_pb2.GetAgentStatusRequest(), timeout=5)
    assert (status.host_name, status.pa_ip) == ("host-1", "198.18.0.1")
    assert status.applied_revision == server.agent.applied_revision > 0
    assert (status.lookup_records, status.virtual_subnets, status.customer_routes) == (1, 1, 1)
    assert (status.provider_addresses, status.routing_domains) == (1, 1)
    assert (status.pa_mtu, status.inner_mtu) == (1500, 1458)
    assert status.syncs == 1
    assert status.datapath == (server.agent.datapath is not None)
    dump = stub.DumpTable(vswitch_pb2.DumpTableRequest(), timeout=5)
    assert dump.applied_revision == status.applied_revision
    assert [r.ca for r in dump.lookup_records] == ["192.0.2.1"]
    assert dump.lookup_records[0].rdid == "rd-blue"
    assert dump.lookup_records[0].revision > 0
    assert [s.vsid for s in dump.virtual_subnets] == [4096]
    assert [p.pa_ip for p in dump.provider_addresses] == ["198.18.0.1"]
    assert len(dump.customer_routes) == 1
    assert len(dump.routing_domains) == 1


def test_health_is_serving(running: Running) -> None:
    server, _ = running
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(
            health_pb2.HealthCheckRequest(service="overland.v1.VswitchService"), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_datapath_calls_are_delegated_or_refused_in_table_only_mode(running: Running) -> None:
    server, stub = running
    port = vswitch_pb2.Port(name="tap-vm1", mac="02:00:c0:00:02:01", vsid=4096)
    if server.agent.datapath is None:
        with pytest.raises(grpc.RpcError) as raised:
            stub.AttachPort(vswitch_pb2.AttachPortRequest(port=port), timeout=5)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert list(stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=5).ports) == []
        assert stub.GetCounters(vswitch_pb2.GetCountersRequest(), timeout=5).rx_packets == 0
        return
    attached = stub.AttachPort(vswitch_pb2.AttachPortRequest(port=port), timeout=5)
    assert attached.ca == "192.0.2.1"
    assert [p.name for p in stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=5).ports] == ["tap-vm1"]
    stub.DetachPort(vswitch_pb2.DetachPortRequest(name="tap-vm1"), timeout=5)
    assert list(stub.ListPorts(vswitch_pb2.ListPortsRequest(), timeout=5).ports) == []
    counters = stub.GetCounters(vswitch_pb2.GetCountersRequest(), timeout=5)
    assert (counters.rx_packets, dict(counters.drops)) == (7, {"truncated": 2})
    assert [
        e.name for e in stub.ListExtensions(vswitch_pb2.ListExtensionsRequest(), timeout=5).extensions
    ] == ["capture"]
    # The datapath got the cold sync as one reset delta.
    datapath = server.agent.datapath
    assert isinstance(datapath, RecordingDatapath)
    assert datapath.deltas[0].reset
    assert datapath.started


def test_bad_port_gets_field_violations(running: Running) -> None:
    _, stub = running
    with pytest.raises(grpc.RpcError) as raised:
        stub.AttachPort(vswitch_pb2.AttachPortRequest(port=vswitch_pb2.Port(name="x" * 16)), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(raised.value) == {"port.name", "port.mac", "port.vsid"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"backend": vswitch_pb2.PORT_BACKEND_TAP_KERNEL, "netns": "vm1"}, "port.netns"),
        ({"backend": 9}, "port.backend"),
    ],
)
def test_kernel_ports_take_no_namespace_and_backends_are_known(
    running: Running, changes: dict[str, Any], field: str
) -> None:
    _, stub = running
    port = vswitch_pb2.Port(name="kp-vm1", mac="02:00:c0:00:02:01", vsid=4096, **changes)
    with pytest.raises(grpc.RpcError) as raised:
        stub.AttachPort(vswitch_pb2.AttachPortRequest(port=port), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(raised.value) == {field}


def test_stop_stops_the_datapath_last() -> None:
    server, kv, datapath = _start(table_only=False)
    server.stop()
    kv.close()
    assert datapath.stopped


def test_config_from_flags_and_environment() -> None:
    config = load_config(
        ["--pa-ip", "198.18.0.7", "--rdid", "rd-a", "--table-only"],
        {"OVERLAND_VSWITCH_HOST_NAME": "h7", "OVERLAND_ETCD_ENDPOINTS": "127.0.0.1:2379,127.0.0.2:2379"},
    )
    assert (config.host_name, config.pa_ip, config.rdids, config.table_only) == (
        "h7",
        "198.18.0.7",
        ("rd-a",),
        True,
    )
    assert config.etcd.endpoints == ("127.0.0.1:2379", "127.0.0.2:2379")


def test_the_cli_attaches_a_kernel_port() -> None:
    server, kv, datapath = _start(table_only=False)
    try:
        env = {"OVERLAND_VSWITCH_ENDPOINT": f"127.0.0.1:{server.port}"}
        args = ["vswitch", "attach", "--name", "kp-vm1", "--mac", "02:00:c0:00:02:01", "--vsid", "4096"]
        attached = invoke_json(env, *args, "--backend", "tap-kernel")
        assert isinstance(attached, dict)
        assert attached["backend"] == "PORT_BACKEND_TAP_KERNEL"
        assert [p.backend for p in datapath.attached] == [vswitch_pb2.PORT_BACKEND_TAP_KERNEL]
    finally:
        server.stop()
        kv.close()
