"""VmService: the site's VM runtime over gRPC, a thin shell over ``VmHost``."""

from __future__ import annotations

import grpc

from overland.v1 import vm_pb2, vm_pb2_grpc
from services.replica.vm.host import DEFAULT_STOP_SECONDS, VmHost


class VmServicer(vm_pb2_grpc.VmServiceServicer):
    """Each RPC returns the VM's view after the operation (DeleteVm: its last view)."""

    def __init__(self, host: VmHost):
        self._host = host

    def CreateVm(  # noqa: N802 (gRPC method name)
        self, request: vm_pb2.CreateVmRequest, context: grpc.ServicerContext
    ) -> vm_pb2.Vm:
        return self._host.to_proto(self._host.create(request.vm))

    def StartVm(  # noqa: N802 (gRPC method name)
        self, request: vm_pb2.StartVmRequest, context: grpc.ServicerContext
    ) -> vm_pb2.Vm:
        return self._host.to_proto(self._host.start(request.name))

    def StopVm(  # noqa: N802 (gRPC method name)
        self, request: vm_pb2.StopVmRequest, context: grpc.ServicerContext
    ) -> vm_pb2.Vm:
        timeout = float(request.timeout_seconds) or DEFAULT_STOP_SECONDS
        return self._host.to_proto(self._host.stop(request.name, request.turn_off, timeout))

    def GetVm(  # noqa: N802 (gRPC method name)
        self, request: vm_pb2.GetVmRequest, context: grpc.ServicerContext
    ) -> vm_pb2.Vm:
        return self._host.to_proto(self._host.get(request.name))

    def ListVms(  # noqa: N802 (gRPC method name)
        self, request: vm_pb2.ListVmsRequest, context: grpc.ServicerContext
    ) -> vm_pb2.ListVmsResponse:
        return vm_pb2.ListVmsResponse(vms=[self._host.to_proto(vm) for vm in self._host.vms()])

    def DeleteVm(  # noqa: N802 (gRPC method name)
        self, request: vm_pb2.DeleteVmRequest, context: grpc.ServicerContext
    ) -> vm_pb2.Vm:
        return self._host.to_proto(self._host.delete(request.name, request.delete_disks))

    def GetConsoleLog(  # noqa: N802 (gRPC method name)
        self, request: vm_pb2.GetConsoleLogRequest, context: grpc.ServicerContext
    ) -> vm_pb2.ConsoleLog:
        return self._host.console(request.name, request.offset, request.max_bytes)
