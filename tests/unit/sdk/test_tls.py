"""TLS and mutual TLS with certificates made in the test: the client verifies the server against the CA,
and a server that requires client certificates refuses a client without one."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from overland import (
    ClientConfig,
    ConfigurationError,
    Endpoint,
    PolicyClient,
    Service,
    TlsFiles,
    UnavailableError,
)
from tests.unit.sdk.certs import Pki
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
