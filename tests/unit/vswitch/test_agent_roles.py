"""The agent's API with mutual TLS and real certificates: an admin and the agent's own host may
attach ports; another host, a tenant and a certificate without an identity are refused by name."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from overland.config import TlsFiles
from overland.v1 import vswitch_pb2, vswitch_pb2_grpc
from services.common.config import ServerConfig
from services.common.identity import Role
from services.common.memory_kv import MemoryKV
from services.vswitch.config import AgentConfig
from services.vswitch.server import create_server
from tests.unit.vswitch.agent_helpers import RecordingDatapath
from tools.pki import CertificateAuthority


@pytest.mark.parametrize(
    ("identity", "refused"),
    [
        ((Role.ADMIN, "ops"), ""),
        ((Role.HOST, "host-1"), ""),
        ((Role.HOST, "host-2"), "host 'host-2' may not call AttachPort"),
        ((Role.TENANT, "Contoso"), "tenant 'Contoso' may not call AttachPort"),
        (None, "CN=caller with no overland://ROLE/NAME URI"),
    ],
)
def test_who_may_attach_a_port(tmp_path: Path, identity: tuple[Role, str] | None, refused: str) -> None:
    ca = CertificateAuthority.create(tmp_path, "agent test CA", days=1)
    served = ca.issue(tmp_path, "server", "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True)
    tls = TlsFiles(ca=ca.path, cert=served.cert, key=served.key)
    config = AgentConfig(host_name="host-1", pa_ip="198.18.0.1", server=ServerConfig(tls=tls))
    kv = MemoryKV()
    datapath = RecordingDatapath()
    server, port = create_server(config, kv=kv, datapath_factory=lambda _config: datapath)
    client = ca.issue(tmp_path, "caller", "caller", client=True, identity=identity)
    try:
        with grpc.secure_channel(f"localhost:{port}", client.credentials()) as channel:
            stub = vswitch_pb2_grpc.VswitchServiceStub(channel)
            request = vswitch_pb2.AttachPortRequest(
                port=vswitch_pb2.Port(name="vm1-eth0", vsid=4096, mac="02:00:00:00:00:01")
            )
            if not refused:
                stub.AttachPort(request, timeout=10)
                assert [port.name for port in datapath.attached] == ["vm1-eth0"]
                return
            with pytest.raises(grpc.RpcError) as caught:
                stub.AttachPort(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused in (caught.value.details() or "")
            assert not datapath.attached
    finally:
        server.stop()
        kv.close()
