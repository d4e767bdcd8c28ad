"""The Prometheus metrics endpoint of every service: ``--metrics-listen`` and its variable, loopback
only unless TLS or ``--insecure-listen`` says otherwise, one-line errors; and the endpoint itself, one
registry per service in a process, HTTPS with the service's files and a client CA."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from overland.config import TlsFiles
from services.common.config import ConfigError, TelemetryConfig
from services.common.errors import InvalidArgument
from services.common.telemetry import Telemetry
from services.policy.config import PolicyConfig
from tests.unit.common.test_service_config import (
    POLICY,
    SERVICES,
    Service,
    load,
    no_overland_environment,  # noqa: F401 - the autouse fixture: main reads os.environ
)
from tests.unit.sdk.certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def scrape(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        text: str = response.read().decode()
        return text


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_no_metrics_endpoint_unless_asked(service: Service) -> None:
    assert load(service).telemetry.metrics_listen == ""


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_the_flag_and_the_service_variable_set_it(service: Service) -> None:
    flagged = load(service, "--metrics-listen", "127.0.0.1:0").telemetry
    assert (flagged.metrics_listen, flagged.metrics_tls) == ("127.0.0.1:0", None)
    assert flagged.enabled
    env = {service.defaults.metrics_listen_env: service.defaults.metrics_address}
    assert load(service, env=env).telemetry.metrics_listen == service.defaults.metrics_address
    # The flag wins over the variable.
    assert load(service, "--metrics-listen", "[::1]:9000", env=env).telemetry.metrics_listen == "[::1]:9000"


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_plain_http_beyond_loopback_needs_insecure_listen(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(service, "--metrics-listen", "0.0.0.0:9464")
    fields = {v.field for v in caught.value.violations}
    assert fields == {"telemetry.metrics_listen"}
    assert "--insecure-listen" in caught.value.message
    assert "plain HTTP" in caught.value.message
    allowed = load(service, "--metrics-listen", "0.0.0.0:9464", "--insecure-listen").telemetry
    assert allowed.insecure_listen
    # main says so in one line, exit 2.
    status = service.main([*service.required, "--metrics-listen", "198.18.0.1:9464"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith(f"{service.what}: ")
    assert "telemetry.metrics_listen" in err


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_with_the_services_tls_it_may_listen_anywhere(service: Service, pki: Pki) -> None:
    served = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    everywhere = ("--bind", "0.0.0.0:0", "--metrics-listen", "0.0.0.0:9464")
    telemetry = load(service, *served, "--tls-client-ca", str(pki.ca), *everywhere).telemetry
    assert telemetry.metrics_tls == TlsFiles(ca=pki.ca, cert=pki.server_cert, key=pki.server_key)


@pytest.mark.parametrize("value", ["9464", "nohost", "127.0.0.1:99999", "127.0.0.1:x", ":9464"])
def test_a_bad_address_is_named(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(POLICY, "--metrics-listen", value)
    assert [v.field for v in caught.value.violations] == ["telemetry.metrics_listen"]
    assert "host:port" in caught.value.message


def test_policy_workers_cannot_share_one_metrics_endpoint() -> None:
    config = load(POLICY, "--bind", "127.0.0.1:50051", "--workers", "2")
    assert config.workers == 2
    with pytest.raises(ConfigError) as caught:
        load(POLICY, "--bind", "127.0.0.1:50051", "--workers", "2", "--metrics-listen", "127.0.0.1:0")
    assert "--workers 1" in caught.value.message
    assert isinstance(config, PolicyConfig)


def test_tls_without_its_key_is_refused_when_built_directly(pki: Pki) -> None:
    config = TelemetryConfig("x", metrics_listen="127.0.0.1:0", metrics_tls=TlsFiles(cert=pki.server_cert))
    assert [v.field for v in config.violations()] == ["telemetry.metrics_tls"]


# -- the endpoint -------------------------------------------------------------------------------


def test_services_in_one_process_each_serve_their_own_metrics() -> None:
    first = Telemetry.start(TelemetryConfig("overland-policy", metrics_listen="127.0.0.1:0"))
    second = Telemetry.start(TelemetryConfig("overland-replica", "site-a", metrics_listen="127.0.0.1:0"))
    assert first is not None
    assert second is not None
    try:
        first.meter.create_counter("overland.test.calls").add(3, {"overland.vm": "vm1"})
        second.meter.create_counter("overland.test.calls").add(5, {"overland.vm": "vm1"})
        assert first.metrics_endpoint is not None
        assert second.metrics_endpoint is not None
        assert first.metrics_endpoint.port != second.metrics_endpoint.port
        one, two = scrape(first.metrics_endpoint.url), scrape(second.metrics_endpoint.url)
        assert 'service_name="overland-policy"' in one
        assert "overland-replica" not in one
        assert 'service_instance_id="site-a"' in two
        # OpenTelemetry's dots are underscores; a counter ends in _total.
        assert [
            line.split()[-1] for line in one.splitlines() if line.startswith("overland_test_calls_total{")
        ] == ["3.0"]
        assert [
            line.split()[-1] for line in two.splitlines() if line.startswith("overland_test_calls_total{")
        ] == ["5.0"]
    finally:
        first.shutdown()
        second.shutdown()
    # Shut down, the endpoint no longer listens.
    with pytest.raises(urllib.error.URLError):
        scrape(first.metrics_endpoint.url)


def test_a_taken_port_is_an_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidArgument, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            Telemetry.start(TelemetryConfig("overland-policy", metrics_listen=f"127.0.0.1:{port}"))


def test_https_with_a_client_ca_serves_only_clients_with_its_certificates(pki: Pki, tmp_path: Path) -> None:
    tls = TlsFiles(ca=pki.ca, cert=pki.server_cert, key=pki.server_key)
    telemetry = Telemetry.start(
        TelemetryConfig("overland-policy", metrics_listen="127.0.0.1:0", metrics_tls=tls)
    )
    assert telemetry is not None
    assert telemetry.metrics_endpoint is not None
    url = telemetry.metrics_endpoint.url
    # A registry with no instrument shows nothing, not even the service's target_info.
    telemetry.meter.create_counter("overland.test.calls").add(1)
    try:
        assert url.startswith("https://127.0.0.1:")
        anonymous = ssl.create_default_context(cafile=str(pki.ca))
        # Refused in the handshake (URLError, SSLError and a reset are all OSErrors).
        with pytest.raises(OSError, match=r"(?i)certificate.required|reset|EOF"):
            scrape(url, anonymous)
        # Plain HTTP gets no answer.
        with pytest.raises(OSError, match=r"(?i)reset|closed|EOF"):
            scrape(url.replace("https://", "http://"))
        client = ssl.create_default_context(cafile=str(pki.ca))
        client.load_cert_chain(pki.client_cert, pki.client_key)
        assert 'service_name="overland-policy"' in scrape(url, client)
    finally:
        telemetry.shutdown()
