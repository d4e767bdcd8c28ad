"""The real policy service on a real etcd, for the SDK and CLI integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from overland.config import TlsFiles
from services.common.config import ServerConfig
from services.common.etcd_auth import POLICY_USER
from services.common.etcd_process import EtcdProcess
from services.policy.config import PolicyConfig
from services.policy.server import PolicyServer, create_server

# The service's etcd deadline here: short, so that a lost etcd reaches the CLI as UNAVAILABLE well within
# the CLI's own deadline (the tests give it 8 s).
POLICY_ETCD_DEADLINE = 2.0


@dataclass
class RealPolicy:
    server: PolicyServer
    address: str
    etcd: EtcdProcess


def start_policy(etcd: EtcdProcess, tls: TlsFiles | None = None) -> RealPolicy:
    config = PolicyConfig(
        server=ServerConfig(bind="127.0.0.1:0", tls=tls, grace_seconds=1.0),
        etcd=etcd.etcd_config(POLICY_USER, timeout=POLICY_ETCD_DEADLINE),
    )
    server, port = create_server(config)
    return RealPolicy(server, f"127.0.0.1:{port}", etcd)


@pytest.fixture
def real_policy(etcd_server: EtcdProcess) -> Iterator[RealPolicy]:
    running = start_policy(etcd_server)
    try:
        yield running
    finally:
        running.server.stop()
