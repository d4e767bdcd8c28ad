"""Streams without resume (ReplicaReceiverService): a server stream is retried only until its first
message, since a restart mid-way would repeat data; a client stream (a delta) is sent and never retried."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from overland import ClientConfig, Endpoint, ReplicaReceiverClient, Service, UnavailableError
from overland.v1 import replica_pb2, replica_pb2_grpc
from tests.unit.sdk.conftest import FAST_RETRY


class FakeReceiver(replica_pb2_grpc.ReplicaReceiverServiceServicer):
    def __init__(self) -> None:
        self.hash_calls = 0
        self.fail_at: list[int] = []
        self.deltas: list[list[replica_pb2.DeltaMessage]] = []

    def GetBlockHashes(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[replica_pb2.BlockHashes]:
        self.hash_calls += 1
        fail_at = self.fail_at.pop(0) if self.fail_at else None
        for block in range(4):
            if block == fail_at:
                context.abort(grpc.StatusCode.UNAVAILABLE, "receiver restarting")
            yield replica_pb2.BlockHashes(first_block=block, digests=bytes([block]) * 32)

    def SendDelta(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> replica_pb2.DeltaAck:
        messages = list(request_iterator)
        self.deltas.append(messages)
        header = messages[0].header
        return replica_pb2.DeltaAck(sequence=header.sequence, chunks_applied=len(messages) - 2)


@pytest.fixture
def receiver() -> Iterator[tuple[FakeReceiver, ReplicaReceiverClient]]:
    fake = FakeReceiver()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    replica_pb2_grpc.add_ReplicaReceiverServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    config = ClientConfig(
        endpoints={Service.REPLICA: Endpoint(f"127.0.0.1:{port}")}, timeout=5, retry=FAST_RETRY
    )
    try:
        with ReplicaReceiverClient(config=config) as client:
            yield fake, client
    finally:
        server.stop(0).wait()


def test_stream_is_retried_before_its_first_message(
    receiver: tuple[FakeReceiver, ReplicaReceiverClient],
) -> None:
    fake, client = receiver
    fake.fail_at = [0]
    blocks = [h.first_block for h in client.get_block_hashes(vm_name="web", disk="os", block_size=2 << 20)]
    assert blocks == [0, 1, 2, 3]
    assert fake.hash_calls == 2


def test_stream_broken_after_data_is_not_restarted(
    receiver: tuple[FakeReceiver, ReplicaReceiverClient],
) -> None:
    fake, client = receiver
    fake.fail_at = [2]
    received: list[int] = []
    with pytest.raises(UnavailableError):
        received.extend(h.first_block for h in client.get_block_hashes(vm_name="web", disk="os"))
    assert received == [0, 1]
    assert fake.hash_calls == 1


def test_send_delta_streams_header_chunks_and_end(
    receiver: tuple[FakeReceiver, ReplicaReceiverClient],
) -> None:
    fake, client = receiver
    messages = [
        replica_pb2.DeltaMessage(header=replica_pb2.DeltaHeader(vm_name="web", sequence=7)),
        *(
            replica_pb2.DeltaMessage(chunk=replica_pb2.DeltaChunk(disk="os", offset=i * 4096, index=i))
            for i in range(3)
        ),
        replica_pb2.DeltaMessage(end_of_delta=3),
    ]
    ack = client.send_delta(iter(messages))
    assert (ack.sequence, ack.chunks_applied) == (7, 3)
    assert fake.deltas == [messages]
