"""Fixtures for the SDK tests: the in-memory policy service on a real gRPC server bound to port 0."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from overland import ClientConfig, Endpoint, PolicyClient, RetryPolicy, Service
from overland.v1 import policy_pb2_grpc
from tests.unit.sdk.certs import Pki, make_pki
from tests.unit.sdk.fake_policy import FakePolicy

# Fast backoff so retry tests take milliseconds; the schedule itself is tested in test_retry.py.
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


@dataclass
class Running:
    fake: FakePolicy
    address: str
    server: grpc.Server

    def config(self, timeout: float = 5.0, retry: RetryPolicy = FAST_RETRY) -> ClientConfig:
        return ClientConfig(endpoints={Service.POLICY: Endpoint(self.address)}, timeout=timeout, retry=retry)


def start_fake(credentials: grpc.ServerCredentials | None = None) -> Running:
    fake = FakePolicy()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(fake, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return Running(fake, f"127.0.0.1:{port}", server)


@pytest.fixture
def policy_server() -> Iterator[Running]:
    running = start_fake()
    try:
        yield running
    finally:
        running.server.stop(0).wait()


@pytest.fixture
def policy(policy_server: Running) -> Iterator[PolicyClient]:
    with PolicyClient(config=policy_server.config()) as client:
        yield client


def seed(client: PolicyClient, vsid: int = 5001, pa: str = "198.18.0.1") -> str:
    """A routing domain, one subnet and one provider address; returns the RDID."""
    domain = client.create_routing_domain(tenant_name="contoso")
    client.create_virtual_subnet(vsid=vsid, rdid=domain.rdid, ca_prefixes=["192.0.2.0/24"])
    client.create_provider_address(host_name="host-a", pa_ip=pa, prefix_length=16)
    return domain.rdid


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)
