"""TLS and mutual TLS with certificates made in the test: the client verifies the server against the CA,
and a server that requires client certificates refuses a client without one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from overland import (
    CertificateRefusedError,
    ClientConfig,
    ConfigurationError,
    Endpoint,
    PolicyClient,
    Service,
    TlsFiles,
    UnavailableError,
)
from overland.retry import RetryPolicy
from tests.unit.sdk.certs import Pki, make_pki
from tests.unit.sdk.cli_runner import invoke
from tests.unit.sdk.conftest import FAST_RETRY, Running, start_fake


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[Running]:
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(),
        require_client_auth=True,
    )
    running = start_fake(credentials)
    try:
        yield running
    finally:
        running.server.stop(0).wait()


def _client(address: str, tls: TlsFiles | None) -> PolicyClient:
    config = ClientConfig(endpoints={Service.POLICY: Endpoint(address, tls)}, timeout=3, retry=FAST_RETRY)
    return PolicyClient(config=config)


def test_mutual_tls_call_succeeds(mtls_server: Running, pki: Pki) -> None:
    with _client(
        mtls_server.address, TlsFiles(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    ) as client:
        created = client.create_routing_domain(tenant_name="secure")
    assert created.tenant_name == "secure"


def test_client_without_certificate_is_refused(mtls_server: Running, pki: Pki) -> None:
    with _client(mtls_server.address, TlsFiles(ca=pki.ca)) as client, pytest.raises(UnavailableError):
        client.get_table_status()
    assert mtls_server.fake.calls["GetTableStatus"] == 0


def test_a_refused_certificate_says_so_and_is_not_retried(
    mtls_server: Running, pki: Pki, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "other")  # a certificate of a CA the server does not trust
    tls = TlsFiles(ca=pki.ca, cert=stranger.client_cert, key=stranger.client_key)
    config = ClientConfig(
        endpoints={Service.POLICY: Endpoint(mtls_server.address, tls)},
        timeout=30,
        # Retried as an outage, this would take minutes: the call ends at its first failure.
        retry=RetryPolicy(max_attempts=50, initial_backoff=5, max_backoff=5),
    )
    with PolicyClient(config=config) as client, pytest.raises(CertificateRefusedError) as refused:
        client.get_table_status()
    assert "refused this client's certificate" in refused.value.message
    assert str(stranger.client_cert) in refused.value.message
    code, _out, err = invoke(
        {
            "OVERLAND_POLICY_ENDPOINT": mtls_server.address,
            "OVERLAND_TLS_CA": str(pki.ca),
            "OVERLAND_TLS_CERT": str(stranger.client_cert),
            "OVERLAND_TLS_KEY": str(stranger.client_key),
        },
        "policy",
        "status",
    )
    assert code == 8
    assert "refused this client's certificate" in err
    # The server's own certificate, refused by nobody: an outage stays an outage.
    with _client(
        mtls_server.address, TlsFiles(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    ) as client:
        assert client.get_table_status() is not None


def test_plaintext_client_is_refused(mtls_server: Running) -> None:
    with _client(mtls_server.address, None) as client, pytest.raises(UnavailableError):
        client.get_table_status()


def test_tls_from_environment(mtls_server: Running, pki: Pki) -> None:
    environ = {
        "OVERLAND_POLICY_ENDPOINT": mtls_server.address,
        "OVERLAND_TLS_CA": str(pki.ca),
        "OVERLAND_TLS_CERT": str(pki.client_cert),
        "OVERLAND_TLS_KEY": str(pki.client_key),
        "OVERLAND_TIMEOUT": "3",
    }
    with PolicyClient(config=ClientConfig.from_env(environ)) as client:
        assert client.get_table_status().revision >= 1


def test_half_configured_mutual_tls_is_rejected_before_any_call(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="both"):
        ClientConfig(
            endpoints={Service.POLICY: Endpoint("127.0.0.1:1", TlsFiles(ca=pki.ca, cert=pki.client_cert))}
        )
    with pytest.raises(ConfigurationError, match="not found"):
        ClientConfig(
            endpoints={Service.POLICY: Endpoint("127.0.0.1:1", TlsFiles(ca=pki.ca.with_name("none")))}
        )
