"""A real policy gRPC server on port 0 over a MemoryKV, and a client stub for it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from overland.v1 import policy_pb2_grpc
from services.common.config import ServerConfig
from services.common.memory_kv import MemoryKV
from services.policy import PolicyConfig, PolicyServer, create_server


@pytest.fixture
def policy_server(memory_kv: MemoryKV) -> Iterator[PolicyServer]:
    server, _port = create_server(PolicyConfig(server=ServerConfig(bind="127.0.0.1:0")), kv=memory_kv)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stub(policy_server: PolicyServer) -> Iterator[policy_pb2_grpc.PolicyServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{policy_server.port}") as channel:
        yield policy_pb2_grpc.PolicyServiceStub(channel)
