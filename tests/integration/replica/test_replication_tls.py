"""Mutual TLS: the DR site takes the primary's identity from its client certificate's CN, never from
the development header."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from overland.config import TlsFiles
from overland.v1 import replica_pb2, replica_pb2_grpc
from services.common.config import ServerConfig
from services.replica.config import PRIMARY_HEADER, ReplicaConfig
from services.replica.server import create_server
from tests.integration.replica.conftest import (
    MiB,
    ServiceProcess,
    enable_request,
    free_port,
    make_disk,
    primary_stub,
    qemu_compare,
    qemu_io,
    state_name,
    wait_for,
)

pytestmark = pytest.mark.qemu


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Path:
    directory.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=overland-test-ca",
        "-keyout",
        str(directory / "ca.key"),
        "-out",
        str(directory / "ca.crt"),
    )
    for name, extension in (
        ("dr", "subjectAltName=IP:127.0.0.1"),
        ("primary", "extendedKeyUsage=clientAuth"),
        ("mallory", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(directory / f"{name}.key"),
            "-out",
            str(directory / f"{name}.csr"),
        )
        ext = directory / f"{name}.ext"
        ext.write_text(extension + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            str(directory / f"{name}.csr"),
            "-CA",
            str(directory / "ca.crt"),
            "-CAkey",
            str(directory / "ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            str(ext),
            "-out",
            str(directory / f"{name}.crt"),
        )
    return directory


def test_identity_comes_from_the_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    store = tmp_path / "dr-store"
    dr = ServiceProcess(
        [
            "--site-name",
            "dr",
            "--state-dir",
            str(tmp_path / "dr-state"),
            "--allow",
            f"primary={store}",
            "--tls-cert",
            str(pki / "dr.crt"),
            "--tls-key",
            str(pki / "dr.key"),
            "--tls-client-ca",
            str(pki / "ca.crt"),
        ],
        free_port(),
        tmp_path / "dr.log",
    ).start()
    servers = []
    try:
        disk = make_disk(tmp_path / "d0.vhd", 4 * MiB)
        qemu_io(str(disk), "write -P 0x71 0 1M")
        # Each primary serves its own copy: one disk file has one writer (image locking).
        disks = {"primary": disk, "mallory": Path(shutil.copy(disk, tmp_path / "d0-mallory.vhd"))}
        for name in ("primary", "mallory"):
            server, _ = create_server(
                ReplicaConfig(
                    server=ServerConfig(bind="127.0.0.1:0"),
                    state_dir=tmp_path / f"state-{name}",
                    scheduler_tick_seconds=0.2,
                    # The configured name plays no part with TLS: only the certificate counts.
                    site_name="primary",
                    client_tls=TlsFiles(pki / "ca.crt", pki / f"{name}.crt", pki / f"{name}.key"),
                )
            )
            servers.append(server)
            stub = primary_stub(server.port)
            tested = stub.TestReplicationConnection(
                replica_pb2.TestReplicationConnectionRequest(replica_server=dr.endpoint), timeout=30
            )
            results = {c.name: c.result for c in tested.checks}
            assert results["tls"] == replica_pb2.CHECK_RESULT_PASSED, tested
            assert "with this site's client certificate" in tested.checks[1].message
            if name == "primary":
                assert tested.ok, tested
                assert tested.known_as == "primary"
                stub.EnableReplication(enable_request("vm1", {"d0": disks[name]}, dr.endpoint), timeout=30)
                get = lambda stub=stub: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"))  # noqa: E731
                wait_for(get, lambda r: state_name(r) == "REPLICATING")
            else:
                assert results["authorization"] == replica_pb2.CHECK_RESULT_FAILED
                with pytest.raises(grpc.RpcError) as refused:
                    stub.EnableReplication(
                        enable_request("vm1", {"d0": disks[name]}, dr.endpoint), timeout=30
                    )
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "'mallory' (from the client certificate CN)" in (refused.value.details() or "")
        # Without TLS, or trusting another CA, the TLS check says so.
        other = make_pki(tmp_path / "other-pki")
        for client_tls, words in (
            (None, "wants TLS"),
            (
                TlsFiles(other / "ca.crt", other / "primary.crt", other / "primary.key"),
                "certificate verify failed",
            ),
        ):
            server, _ = create_server(
                ReplicaConfig(
                    server=ServerConfig(bind="127.0.0.1:0"),
                    state_dir=tmp_path / f"state-{words.split()[0]}",
                    site_name="primary",
                    client_tls=client_tls,
                )
            )
            servers.append(server)
            tested = primary_stub(server.port).TestReplicationConnection(
                replica_pb2.TestReplicationConnectionRequest(replica_server=dr.endpoint), timeout=30
            )
            (tls,) = [c for c in tested.checks if c.name == "tls"]
            assert tls.result == replica_pb2.CHECK_RESULT_FAILED, tested
            assert words in tls.message
            assert not tested.ok
        compared = qemu_compare(disk, store / "vm1" / "disks" / "d0.vhd")
        assert compared.returncode == 0, compared.stdout
        # A spoofed development header does not help a certificate that is not allowed.
        credentials = grpc.ssl_channel_credentials(
            (pki / "ca.crt").read_bytes(),
            (pki / "mallory.key").read_bytes(),
            (pki / "mallory.crt").read_bytes(),
        )
        receiver = replica_pb2_grpc.ReplicaReceiverServiceStub(grpc.secure_channel(dr.endpoint, credentials))
        with pytest.raises(grpc.RpcError) as info:
            receiver.GetReceiverState(
                replica_pb2.GetReceiverStateRequest(vm_name="vm1"),
                metadata=((PRIMARY_HEADER, "primary"),),
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        for server in servers:
            server.stop()
        dr.stop()
