"""The policy service with mutual TLS from its command-line configuration: a client with a
certificate the CA signed is served, one without is refused."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from overland.v1 import policy_pb2, policy_pb2_grpc
from services.common.memory_kv import MemoryKV
from services.policy import create_server, load_config
from tests.unit.sdk.certs import make_pki


def test_mutual_tls(tmp_path: Path, memory_kv: MemoryKV) -> None:
    pki = make_pki(tmp_path)
    config = load_config(
        [
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            str(pki.server_cert),
            "--tls-key",
            str(pki.server_key),
            "--tls-client-ca",
            str(pki.ca),
        ],
        env={},
    )
    server, port = create_server(config, kv=memory_kv)
    try:
        trusted = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        with grpc.secure_channel(f"localhost:{port}", trusted) as channel:
            answer = policy_pb2_grpc.PolicyServiceStub(channel).GetTableStatus(
                policy_pb2.GetTableStatusRequest(), timeout=10
            )
            assert answer.revision == memory_kv.current_revision()
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", anonymous) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                policy_pb2_grpc.PolicyServiceStub(channel).GetTableStatus(
                    policy_pb2.GetTableStatusRequest(), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()
