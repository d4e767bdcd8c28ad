"""``python -m services.common.health_probe``, the Kubernetes exec probe: gRPC health over mutual TLS
with the clients' TLS variables, exit 0 only for SERVING."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from overland import defaults
from overland.config import TlsFiles
from services.common.config import ServerConfig
from services.common.health_probe import main
from services.common.server import GrpcServer, build_server
from tools.pki import CertificateAuthority


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, TlsFiles]:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(directory)
    server = ca.issue(directory, "server", "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True)
    client = ca.issue(directory, "client", "probe", client=True)
    return server, client


@pytest.fixture
def server(issued: tuple[TlsFiles, TlsFiles]) -> Iterator[GrpcServer]:
    tls, _ = issued
    built = build_server(
        ServerConfig(bind="127.0.0.1:0", max_workers=2, grace_seconds=0, tls=tls), [], lambda _: None
    )
    try:
        yield built
    finally:
        built.stop()


def client_env(client: TlsFiles) -> dict[str, str]:
    return {
        defaults.TLS_CA_ENV: str(client.ca),
        defaults.TLS_CERT_ENV: str(client.cert),
        defaults.TLS_KEY_ENV: str(client.key),
    }


def test_a_serving_service_passes(
    server: GrpcServer, issued: tuple[TlsFiles, TlsFiles], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([f"127.0.0.1:{server.port}"], client_env(issued[1])) == 0
    server.set_serving(False)
    assert main([f"127.0.0.1:{server.port}"], client_env(issued[1])) == 1
    assert "NOT_SERVING" in capsys.readouterr().err


def test_without_the_client_certificate_it_fails(
    server: GrpcServer, issued: tuple[TlsFiles, TlsFiles], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([f"127.0.0.1:{server.port}"], {defaults.TLS_CA_ENV: str(issued[1].ca)}) == 1
    assert main([f"127.0.0.1:{server.port}"], {}) == 1
    assert capsys.readouterr().err.count("\n") == 2


def test_bad_arguments_and_missing_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], {}) == 2
    assert main(["127.0.0.1:1"], {defaults.TLS_CA_ENV: str(tmp_path / "ca.crt")}) == 2
    assert str(tmp_path / "ca.crt") in capsys.readouterr().err
