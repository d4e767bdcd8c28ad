"""ClientConfig from arguments and environment, validated once when built."""

from __future__ import annotations

from pathlib import Path

import pytest

from overland import ClientConfig, ConfigurationError, Endpoint, Service, TlsFiles


def test_defaults_without_environment() -> None:
    config = ClientConfig.from_env({})
    assert config.endpoint(Service.POLICY).address == "127.0.0.1:50051"
    assert config.endpoint(Service.POLICY).tls is None
    assert config.timeout == 10.0


def test_environment_sets_endpoints_timeout_and_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    environ = {
        "OVERLAND_POLICY_ENDPOINT": "policy.example:7000",
        "OVERLAND_VSWITCH_ENDPOINT": "[::1]:7001",
        "OVERLAND_REPLICA_ENDPOINT": "unix:/run/overland/replica.sock",
        "OVERLAND_TIMEOUT": "2.5",
        "OVERLAND_TLS_CA": str(ca),
    }
    config = ClientConfig.from_env(environ)
    assert config.endpoint(Service.POLICY) == Endpoint("policy.example:7000", TlsFiles(ca=ca))
    assert config.endpoint(Service.VSWITCH).address == "[::1]:7001"
    assert config.endpoint(Service.REPLICA).address.startswith("unix:")
    assert config.timeout == 2.5


def test_explicit_arguments_win_over_environment() -> None:
    config = ClientConfig.from_env({"OVERLAND_TIMEOUT": "9"}, timeout=1.0)
    assert config.timeout == 1.0
    replaced = config.with_endpoint(Service.POLICY, "127.0.0.1:9999")
    assert replaced.endpoint(Service.POLICY).address == "127.0.0.1:9999"
    assert config.endpoint(Service.POLICY).address == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"OVERLAND_TIMEOUT": "soon"}, "OVERLAND_TIMEOUT"),
        ({"OVERLAND_TIMEOUT": "-1"}, "timeout"),
        ({"OVERLAND_POLICY_ENDPOINT": "no-port"}, "host:port"),
        ({"OVERLAND_VSWITCH_ENDPOINT": "host:99999"}, "host:port"),
        ({"OVERLAND_TLS_CERT": "/nonexistent/cert.pem"}, "both"),
    ],
)
def test_bad_configuration_fails_at_build_time(environ: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ClientConfig.from_env(environ)


def test_page_size_is_bounded() -> None:
    with pytest.raises(ConfigurationError, match="page_size"):
        ClientConfig(page_size=5000)


@pytest.mark.parametrize("content", [b"", b"not a certificate", bytes(range(256))])
def test_a_tls_file_without_a_pem_block_is_a_configuration_error_naming_it(
    tmp_path: Path, content: bytes
) -> None:
    """grpc's C core aborts the whole process on an empty client certificate or key."""
    good = tmp_path / "good.pem"
    good.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    for files in (TlsFiles(cert=bad, key=good), TlsFiles(cert=good, key=bad), TlsFiles(ca=bad)):
        with pytest.raises(ConfigurationError, match=r"bad\.pem holds no PEM block"):
            files.credentials()
