"""A site's NIC ports on a vswitch agent (a small in-memory VswitchService on a real gRPC server):
the port a NIC gets, a start that finds it already there, one that finds another NIC's there, and
an agent that refuses or does not answer, each a typed error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from overland.v1 import vswitch_pb2, vswitch_pb2_grpc
from services.replica.vm import AgentPorts, PortFailed, PortRequest
from services.replica.vm.ports import SwitchUnavailable
from tests.unit.sdk.cli_runner import serving

PORT = PortRequest("ovl0123abcdn0", "52:54:00:0b:00:0a", 5001, "web1")


class FakeAgent(vswitch_pb2_grpc.VswitchServiceServicer):
    def __init__(self) -> None:
        self.ports: dict[str, vswitch_pb2.Port] = {}
        self.attached = 0
        # What the agent's access rules say to every call (docs/security.md); empty: allowed.
        self.denied = ""

    def AttachPort(self, request: Any, context: grpc.ServicerContext) -> vswitch_pb2.Port:
        if not request.port.mac.startswith("52:54"):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no lookup record has that MAC")
        self.attached += 1
        port = vswitch_pb2.Port()
        port.CopyFrom(request.port)
        port.mtu = 1458
        self.ports[request.port.name] = port
        return port

    def DetachPort(self, request: Any, context: grpc.ServicerContext) -> vswitch_pb2.DetachPortResponse:
        if self.ports.pop(request.name, None) is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no port named {request.name}")
        return vswitch_pb2.DetachPortResponse()

    def ListPorts(self, request: Any, context: grpc.ServicerContext) -> vswitch_pb2.ListPortsResponse:
        if self.denied:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, self.denied)
        return vswitch_pb2.ListPortsResponse(ports=list(self.ports.values()))


@pytest.fixture
def agent() -> Iterator[tuple[FakeAgent, AgentPorts]]:
    fake = FakeAgent()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    with serving(vswitch_pb2_grpc.add_VswitchServiceServicer_to_server, fake) as address:
        ports = AgentPorts(address)
        yield fake, ports
        ports.close()


def test_a_nic_gets_a_tap_kernel_port_once(agent: tuple[FakeAgent, AgentPorts]) -> None:
    fake, ports = agent
    # The VM's NIC gets the port's MTU (the switch's inner MTU), made now or before.
    assert ports.ensure(PORT) == 1458
    assert ports.ensure(PORT) == 1458
    assert fake.attached == 1
    made = fake.ports[PORT.name]
    assert (made.mac, made.vsid, made.vm_name, made.backend, made.netns) == (
        PORT.mac,
        5001,
        "web1",
        vswitch_pb2.PORT_BACKEND_TAP_KERNEL,
        "",
    )
    ports.remove(PORT.name)
    ports.remove(PORT.name)
    assert fake.ports == {}


def test_another_nics_port_or_a_refusal_is_a_typed_error(agent: tuple[FakeAgent, AgentPorts]) -> None:
    fake, ports = agent
    fake.ports[PORT.name] = vswitch_pb2.Port(name=PORT.name, mac=PORT.mac, vsid=5002)
    with pytest.raises(PortFailed, match="not this NIC's"):
        ports.ensure(PORT)
    with pytest.raises(PortFailed, match="no lookup record"):
        ports.ensure(PortRequest("ovl0123abcdn1", "02:00:00:00:0b:01", 5001, "web1"))


def test_an_identity_the_agent_refuses_names_the_certificate_flag(
    agent: tuple[FakeAgent, AgentPorts],
) -> None:
    fake, ports = agent
    fake.denied = "host 'h2' may not call ListPorts: a host identity calls its own host's agent only"
    with pytest.raises(PortFailed) as refused:
        ports.ensure(PORT)
    message = str(refused.value)
    assert "refused this site's identity (attach port ovl0123abcdn0)" in message
    assert fake.denied in message
    assert "--vswitch-cert" in message
    assert fake.attached == 0


def test_an_agent_that_does_not_answer_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    ports = AgentPorts(f"127.0.0.1:{closed}")
    try:
        with pytest.raises(SwitchUnavailable, match="did not answer"):
            ports.ensure(PORT)
    finally:
        ports.close()
