"""Stream slots: open streams never take the threads of unary calls, and the stream past the limit is
refused with RESOURCE_EXHAUSTED instead of waiting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common import ServerConfig, build_server
from services.common.server import GrpcServer

SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name


class _Servicer(policy_pb2_grpc.PolicyServiceServicer):
    """Streams that stay open until their client goes away; a unary call that answers at once."""

    def __init__(self) -> None:
        self.streaming = threading.Semaphore(0)

    def GetRoutingDomain(
        self, request: policy_pb2.GetRoutingDomainRequest, context: grpc.ServicerContext
    ) -> types_pb2.RoutingDomain:
        return types_pb2.RoutingDomain(rdid=request.rdid)

    def WatchTable(
        self, request: policy_pb2.WatchTableRequest, context: grpc.ServicerContext
    ) -> Iterator[policy_pb2.WatchTableResponse]:
        yield policy_pb2.WatchTableResponse(revision=1)
        gone = threading.Event()
        context.add_callback(gone.set)
        self.streaming.release()
        gone.wait()

    def BulkApplyLookupRecords(
        self,
        request_iterator: Iterator[policy_pb2.BulkApplyLookupRecordsRequest],
        context: grpc.ServicerContext,
    ) -> policy_pb2.BulkApplyLookupRecordsResponse:
        self.streaming.release()
        return policy_pb2.BulkApplyLookupRecordsResponse(applied=sum(1 for _ in request_iterator))


@pytest.fixture
def served() -> Iterator[tuple[GrpcServer, _Servicer, grpc.Channel]]:
    servicer = _Servicer()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    # As few unary threads as streams: before stream slots, two open streams froze this server.
    built = build_server(
        ServerConfig(bind="127.0.0.1:0", max_workers=2, stream_slots=3, grace_seconds=0),
        [SERVICE],
        lambda server: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server),
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{built.port}")
    yield built, servicer, channel
    channel.close()
    built.stop()


def _open_watch(stub: policy_pb2_grpc.PolicyServiceStub, servicer: _Servicer) -> Any:
    call = stub.WatchTable(policy_pb2.WatchTableRequest(), timeout=30)
    assert next(iter(call)).revision == 1
    assert servicer.streaming.acquire(timeout=10)
    return call


Served = tuple[GrpcServer, _Servicer, grpc.Channel]


def test_unary_calls_and_health_answer_while_every_stream_slot_is_taken(served: Served) -> None:
    built, servicer, channel = served
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    streams = [_open_watch(stub, servicer) for _ in range(3)]
    assert built.stream_slots.in_use == 3
    # More unary calls than unary threads, one after another and at once.
    for n in range(5):
        assert stub.GetRoutingDomain(policy_pb2.GetRoutingDomainRequest(rdid=f"rd-{n}"), timeout=10).rdid
    names = [f"rd-{n}" for n in range(6)]
    futures = [
        stub.GetRoutingDomain.future(policy_pb2.GetRoutingDomainRequest(rdid=n), timeout=10) for n in names
    ]
    assert [f.result().rdid for f in futures] == names
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    for call in streams:
        call.cancel()


def test_the_stream_past_the_slots_is_refused_and_a_freed_slot_is_reused(served: Served) -> None:
    built, servicer, channel = served
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    streams = [_open_watch(stub, servicer) for _ in range(3)]
    refused = stub.WatchTable(policy_pb2.WatchTableRequest(), timeout=10)
    with pytest.raises(grpc.RpcError) as error:
        next(iter(refused))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 streams open" in (error.value.details() or "")
    # Client streams count too.
    with pytest.raises(grpc.RpcError) as bulk:
        stub.BulkApplyLookupRecords(iter([policy_pb2.BulkApplyLookupRecordsRequest()]), timeout=10)
    assert bulk.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    streams.pop().cancel()
    # The cancelled stream's handler ends and gives its slot back.
    for _ in range(100):
        if built.stream_slots.in_use == 2:
            break
        threading.Event().wait(0.05)
    assert built.stream_slots.in_use == 2
    answer = stub.BulkApplyLookupRecords(iter([policy_pb2.BulkApplyLookupRecordsRequest()] * 2), timeout=10)
    assert answer.applied == 2
    assert built.stream_slots.in_use == 2
    streams.append(_open_watch(stub, servicer))
    assert built.stream_slots.in_use == 3
    for call in streams:
        call.cancel()
