"""``overland vm`` and ``VmClient`` (sync and asyncio) against a small in-memory VmService on a real
gRPC server: the request each command sends, the console (with --follow until the VM is off), and the
exit codes of an unknown VM and of a VM in the wrong state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

import overland.aio
from overland import ClientConfig, VmClient
from overland.cli.vm import NIC_KEYS, parse_nic
from overland.v1 import replica_pb2, vm_pb2, vm_pb2_grpc
from tests.unit.sdk.cli_runner import invoke, invoke_json, serving

MiB = 1024 * 1024


class FakeVms(vm_pb2_grpc.VmServiceServicer):
    def __init__(self) -> None:
        self.vms: dict[str, vm_pb2.Vm] = {}
        self.console = b""
        self.stops: list[vm_pb2.StopVmRequest] = []
        # Console reads left before a running VM turns off by itself (the guest powers off).
        self.reads_until_off = -1

    def _get(self, name: str, context: grpc.ServicerContext) -> vm_pb2.Vm:
        if name not in self.vms:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no VM named {name!r}")
        return self.vms[name]

    def CreateVm(self, request: Any, context: grpc.ServicerContext) -> vm_pb2.Vm:
        self.vms[request.vm.name] = vm_pb2.Vm(config=request.vm, id="0" * 32, state=vm_pb2.VM_STATE_OFF)
        return self.vms[request.vm.name]

    def StartVm(self, request: Any, context: grpc.ServicerContext) -> vm_pb2.Vm:
        vm = self._get(request.name, context)
        if vm.state != vm_pb2.VM_STATE_OFF:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"VM {request.name!r} is running")
        vm.state = vm_pb2.VM_STATE_RUNNING
        vm.pid = 4242
        return vm

    def StopVm(self, request: Any, context: grpc.ServicerContext) -> vm_pb2.Vm:
        self.stops.append(request)
        vm = self._get(request.name, context)
        vm.state = vm_pb2.VM_STATE_OFF
        vm.last_stop = "turned off" if request.turn_off else "shut down"
        return vm

    def GetVm(self, request: Any, context: grpc.ServicerContext) -> vm_pb2.Vm:
        return self._get(request.name, context)

    def ListVms(self, request: Any, context: grpc.ServicerContext) -> vm_pb2.ListVmsResponse:
        return vm_pb2.ListVmsResponse(vms=list(self.vms.values()))

    def DeleteVm(self, request: Any, context: grpc.ServicerContext) -> vm_pb2.Vm:
        return self.vms.pop(self._get(request.name, context).config.name)

    def GetConsoleLog(self, request: Any, context: grpc.ServicerContext) -> vm_pb2.ConsoleLog:
        vm = self._get(request.name, context)
        if self.reads_until_off == 0:
            vm.state = vm_pb2.VM_STATE_OFF
        self.reads_until_off -= 1
        # A small chunk, so the command has to ask again.
        data = self.console[request.offset : request.offset + 4]
        size = len(self.console)
        if vm.state == vm_pb2.VM_STATE_RUNNING and self.reads_until_off > 0:
            self.console += b"tick\n"
        return vm_pb2.ConsoleLog(
            data=data, offset=request.offset, next_offset=request.offset + len(data), size=size
        )


@pytest.fixture
def env() -> Iterator[tuple[FakeVms, dict[str, str]]]:
    fake = FakeVms()
    with serving(vm_pb2_grpc.add_VmServiceServicer_to_server, fake) as address:
        yield fake, {"OVERLAND_REPLICA_ENDPOINT": address}


def test_new_sends_the_definition(env: tuple[FakeVms, dict[str, str]]) -> None:
    fake, environ = env
    created = invoke_json(
        environ,
        *("vm", "new", "web 1", "--disk", "os=/srv/web1.vhd", "--cpus", "2", "--memory-mib", "512"),
        "--nic",
        "mac=52:54:00:0b:00:0a,vsid=5001,ip=192.0.2.10/24,ip=198.51.100.10/24,gw=192.0.2.1,dns=192.0.2.53,"
        "failover-ip=203.0.113.10/24,failover-gw=203.0.113.1,test-vsid=5002,ca=192.0.2.10",
    )
    assert isinstance(created, dict)
    sent = fake.vms["web 1"].config
    assert (sent.cpu_count, sent.memory_bytes) == (2, 512 * MiB)
    assert [(d.name, d.path) for d in sent.disks] == [("os", "/srv/web1.vhd")]
    (nic,) = sent.nics
    assert list(nic.addresses) == ["192.0.2.10/24", "198.51.100.10/24"]
    assert (nic.vsid, nic.test_vsid, nic.gateway, nic.ca) == (5001, 5002, "192.0.2.1", "192.0.2.10")
    assert (list(nic.failover_addresses), nic.failover_gateway) == (["203.0.113.10/24"], "203.0.113.1")
    code, _, err = invoke(environ, "vm", "new", "x", "--disk", "os=/d.vhd", "--nic", "speed=fast")
    assert code == 2
    assert "KEY=VALUE" in err
    invoke_json(environ, "vm", "new", "db", "--disk", "os=/d.vhd", "--disk", "data=/d.img", "--format", "raw")
    assert [d.format for d in fake.vms["db"].config.disks] == [replica_pb2.DISK_FORMAT_RAW] * 2


def test_start_stop_get_list_remove(env: tuple[FakeVms, dict[str, str]]) -> None:
    fake, environ = env
    invoke_json(environ, "vm", "new", "web", "--disk", "os=/d.vhd")
    started = invoke_json(environ, "vm", "start", "web")
    assert isinstance(started, dict)
    assert started["state"] == "VM_STATE_RUNNING"
    code, _, err = invoke(environ, "vm", "start", "web")
    assert code == 6
    assert "is running" in err
    code, out, _ = invoke(environ, "vm", "list")
    assert code == 0
    assert "web" in out
    assert "running" in out
    stopped = invoke_json(environ, "vm", "stop", "web", "--timeout", "200")
    assert isinstance(stopped, dict)
    assert stopped["last_stop"] == "shut down"
    invoke_json(environ, "vm", "stop", "web", "--turn-off")
    assert [(s.turn_off, s.timeout_seconds) for s in fake.stops] == [(False, 200), (True, 120)]
    listed = invoke_json(environ, "vm", "list")
    assert isinstance(listed, list)
    assert [vm["config"]["name"] for vm in listed] == ["web"]
    code, out, _ = invoke(environ, "vm", "remove", "web")
    assert (code, out.strip()) == (0, "removed web")
    code, _, err = invoke(environ, "vm", "get", "web")
    assert code == 4
    assert "web" in err


def test_console_prints_the_log_and_follows_it_until_the_vm_is_off(
    env: tuple[FakeVms, dict[str, str]],
) -> None:
    fake, environ = env
    invoke_json(environ, "vm", "new", "web", "--disk", "os=/d.vhd")
    fake.console = b"overland-guest: network up\n"
    code, out, _ = invoke(environ, "vm", "console", "web")
    assert (code, out) == (0, "overland-guest: network up\n")
    code, out, _ = invoke(environ, "vm", "console", "web", "--offset", "16")
    assert out == "network up\n"
    invoke_json(environ, "vm", "start", "web")
    fake.reads_until_off = 12
    code, out, _ = invoke(environ, "vm", "console", "web", "--follow", "--interval", "0")
    assert code == 0
    # Everything printed up to the power-off, once, in order.
    assert out == fake.console.decode()
    assert out.startswith("overland-guest: network up\ntick\n")


@given(
    st.lists(st.sampled_from(sorted(NIC_KEYS)), min_size=1, max_size=8),
    st.text(alphabet=st.characters(exclude_characters=",=\x00"), max_size=12),
)
def test_any_nic_spec_is_a_nic_or_a_usage_error(keys: list[str], value: str) -> None:
    spec = ",".join(f"{key}={value}" for key in keys)
    try:
        nic = parse_nic(spec)
    except typer.BadParameter as error:
        message = str(error)
    else:
        message = ""
        assert isinstance(nic, replica_pb2.VmNic)
    assert not message or "number" in message or "cannot be UTF-8" in message


def test_the_asyncio_client_has_the_same_calls(env: tuple[FakeVms, dict[str, str]]) -> None:
    fake, environ = env
    config = ClientConfig.from_env(environ)

    async def scenario() -> list[str]:
        async with overland.aio.VmClient(config=config) as client:
            await client.create_vm(name="web", disks=[replica_pb2.VmDisk(name="os", path="/d.vhd")])
            await client.start_vm(name="web")
            return [vm.config.name async for vm in client.list_vms()]

    assert asyncio.run(scenario()) == ["web"]
    with VmClient(config=config) as client:
        assert client.get_vm(name="web").state == vm_pb2.VM_STATE_RUNNING
        assert client.stop_vm(name="web", turn_off=True).last_stop == "turned off"
    assert fake.vms["web"].pid == 4242
