"""The listening and TLS rules of docs/security.md, checked at start with the rest of the configuration:
nothing listens beyond loopback in plaintext unless ``--insecure-listen`` says so; every TLS mistake
(a missing, unreadable or non-PEM file, a key that is not the certificate's, a client CA without a
server certificate) names what is wrong; etcd credentials come from a file or the environment, never
a flag, and are never sent in plaintext beyond loopback. ``main`` refuses each in one line, exit 2."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from overland import defaults
from overland.config import TlsFiles
from services.common.config import ConfigError, EtcdConfig, EtcdCredentials, is_loopback, tls_file_problems
from tests.unit.common.test_service_config import (
    ETCD_SERVICES,
    REPLICA,
    SERVICES,
    Service,
    load,
    no_overland_environment,  # noqa: F401 - the autouse fixture: main reads os.environ
)
from tools.pki import CertificateAuthority

FIXTURE_CHECKS = [HealthCheck.function_scoped_fixture]


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    # A certificate and key of the same CA that belong to each other, but not to ``cert``/``key``.
    other_cert: Path
    other_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(directory)
    server = ca.issue(directory, "server", "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True)
    other = ca.issue(directory, "other", "other", server=True)
    assert server.cert is not None
    assert server.key is not None
    assert other.cert is not None
    assert other.key is not None
    return Pki(ca.path, server.cert, server.key, other.cert, other.key)


def error_of(service: Service, *argv: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(service, *argv, env=env)
    return caught.value


def main_line(service: Service, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What ``main`` prints for a configuration it refuses: exactly one line, exit 2."""
    status = service.main([*service.required, *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert err.startswith(f"{service.what}: ")
    return err


# -- loopback ---------------------------------------------------------------------------------------


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_is_loopback_exactly_inside_127_0_0_0_8(address: ipaddress.IPv4Address) -> None:
    assert is_loopback(str(address)) == (address in ipaddress.ip_network("127.0.0.0/8"))


@given(st.ip_addresses(v=6))
def test_an_ipv6_address_is_loopback_when_it_is_1_or_a_mapped_127(address: ipaddress.IPv6Address) -> None:
    mapped = address.ipv4_mapped
    expected = address == ipaddress.IPv6Address("::1") or (mapped is not None and mapped.is_loopback)
    assert is_loopback(f"[{address}]") == expected
    assert is_loopback(str(address)) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("[::]", False),
        ("", False),
        ("policy.overland.svc", False),
        ("127.0.0.1.example", False),
    ],
)
def test_names_are_beyond_loopback_but_localhost(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback


# -- nothing listens beyond loopback in plaintext unless told to ---------------------------------------------


@pytest.mark.parametrize("service", SERVICES, ids=str)
@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_CHECKS)
@given(address=st.ip_addresses(v=4))
def test_a_plaintext_bind_beyond_loopback_is_refused_without_insecure_listen(
    service: Service, address: ipaddress.IPv4Address
) -> None:
    bind = f"{address}:7000"
    if address.is_loopback:
        assert load(service, "--bind", bind).server.bind == bind
        return
    error = error_of(service, "--bind", bind)
    assert {v.field for v in error.violations} == {"server.bind"}
    assert "--insecure-listen" in error.message
    config = load(service, "--bind", bind, "--insecure-listen")
    assert config.server.insecure_listen


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_insecure_listen_comes_from_the_service_variable_too(service: Service) -> None:
    env = {service.defaults.insecure_listen_env: "1"}
    assert load(service, "--bind", "0.0.0.0:7000", env=env).server.insecure_listen
    assert not load(service).server.insecure_listen


@pytest.mark.parametrize("service", SERVICES, ids=str)
@pytest.mark.parametrize("bind", ["0.0.0.0:7000", "[::]:7000", "198.18.0.1:7000", "policy.example:7000"])
def test_tls_lets_a_service_listen_anywhere(service: Service, bind: str, pki: Pki) -> None:
    config = load(service, "--bind", bind, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
    assert config.server.tls is not None
    assert not config.server.insecure_listen


def test_the_nbd_export_has_no_tls_so_beyond_loopback_it_needs_insecure_listen(pki: Pki) -> None:
    error = error_of(REPLICA, "--nbd-bind", "0.0.0.0:10809")
    assert {v.field for v in error.violations} == {"nbd_bind"}
    assert "NBD has no TLS" in error.message
    # TLS for the API does not make NBD safe.
    tls = ["--bind", "0.0.0.0:50053", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    assert "nbd_bind" in {v.field for v in error_of(REPLICA, *tls, "--nbd-bind", "0.0.0.0:10809").violations}
    assert load(REPLICA, "--nbd-bind", "0.0.0.0:10809", "--insecure-listen").nbd_bind == "0.0.0.0:10809"
    assert load(REPLICA, "--nbd-bind", "127.0.0.1:10809").nbd_bind == "127.0.0.1:10809"


def test_the_primary_header_switch(pki: Pki) -> None:
    assert not load(REPLICA).insecure_primary_header
    assert load(REPLICA, "--insecure-primary-header").insecure_primary_header
    env = {defaults.REPLICA_INSECURE_PRIMARY_HEADER_ENV: "yes"}
    assert load(REPLICA, env=env).insecure_primary_header


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_main_refuses_a_plaintext_bind_beyond_loopback_in_one_line(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    line = main_line(service, ["--bind", "0.0.0.0:7000"], capsys)
    assert "0.0.0.0:7000 is beyond loopback" in line
    assert "--insecure-listen" in line


# -- TLS mistakes are configuration errors at start ----------------------------------------------------------


def tls_flags(cert: Path | str, key: Path | str, ca: Path | str | None = None) -> list[str]:
    flags = ["--tls-cert", str(cert), "--tls-key", str(key)]
    return [*flags, "--tls-client-ca", str(ca)] if ca else flags


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_a_client_ca_without_a_server_certificate_refuses_to_serve_plaintext(
    service: Service, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    error = error_of(service, "--tls-client-ca", str(pki.ca))
    assert {v.field for v in error.violations} == {"server.tls"}
    assert "refusing to serve without TLS" in error.message
    assert "--tls-client-ca" in main_line(service, ["--tls-client-ca", str(pki.ca)], capsys)


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_a_certificate_without_its_key_is_refused(service: Service, pki: Pki) -> None:
    assert "server.tls" in {v.field for v in error_of(service, "--tls-cert", str(pki.cert)).violations}


@pytest.mark.parametrize("service", SERVICES, ids=str)
@pytest.mark.parametrize("which", ["cert", "key", "ca"])
def test_a_missing_tls_file_is_named(
    service: Service, which: str, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"cert": pki.cert, "key": pki.key, "ca": pki.ca, which: tmp_path / f"no-{which}.pem"}
    argv = tls_flags(files["cert"], files["key"], files["ca"])
    assert str(tmp_path / f"no-{which}.pem") in error_of(service, *argv).message
    assert f"no-{which}.pem" in main_line(service, argv, capsys)


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_a_key_that_is_not_the_certificates_is_named(
    service: Service, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    error = error_of(service, *tls_flags(pki.cert, pki.other_key))
    assert f"the TLS key {pki.other_key} is not the key of the certificate {pki.cert}" in error.message
    assert "is not the key of the certificate" in main_line(
        service, tls_flags(pki.cert, pki.other_key), capsys
    )


@pytest.mark.parametrize("which", ["cert", "key", "ca"])
def test_a_file_that_is_not_pem_is_named(which: str, pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / f"{which}.pem"
    garbage.write_text("not a PEM file\n")
    files = {"cert": pki.cert, "key": pki.key, "ca": pki.ca, which: garbage}
    (problem,) = tls_file_problems(TlsFiles(ca=files["ca"], cert=files["cert"], key=files["key"]))
    assert str(garbage) in problem


def test_an_unreadable_file_is_named(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run as root, who reads any file: the refusal is the operating system's, faked here.
    real = Path.read_bytes

    def refuse(path: Path) -> bytes:
        if path == pki.key:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    (problem,) = tls_file_problems(TlsFiles(cert=pki.cert, key=pki.key))
    assert problem == f"cannot read the TLS key file {pki.key}: Permission denied"


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
def test_etcd_tls_mistakes_are_named_too(service: Service, pki: Pki) -> None:
    argv = ["--etcd-ca", str(pki.ca), "--etcd-cert", str(pki.cert), "--etcd-key", str(pki.other_key)]
    error = error_of(service, *argv)
    assert {v.field for v in error.violations} == {"etcd.tls"}
    assert str(pki.other_key) in error.message
    assert load(service, "--etcd-ca", str(pki.ca), "--etcd-cert", str(pki.cert), "--etcd-key", str(pki.key))


@pytest.mark.parametrize(
    ("flags", "field"), [("client", "client_tls"), ("policy", "policy_tls"), ("vswitch", "vm.vswitch_tls")]
)
def test_the_replica_client_certificates_are_checked_as_well(
    flags: str, field: str, pki: Pki, tmp_path: Path
) -> None:
    """Its certificate for other sites (--client-*), for the policy service (--policy-*) and for its
    host's vswitch agent (--vswitch-*)."""
    ca, cert, key = (f"--{flags}-{part}" for part in ("ca", "cert", "key"))
    error = error_of(REPLICA, ca, str(pki.ca), cert, str(pki.cert), key, str(pki.other_key))
    assert {v.field for v in error.violations} == {field}
    assert "is not the key of the certificate" in error.message
    missing = error_of(REPLICA, ca, str(tmp_path / "no-ca.pem"), cert, str(pki.cert), key, str(pki.key))
    assert str(tmp_path / "no-ca.pem") in missing.message
    assert load(REPLICA, ca, str(pki.ca), cert, str(pki.cert), key, str(pki.key))


def test_the_sites_tls_to_its_agent_comes_from_flags_or_the_environment(pki: Pki) -> None:
    env = {
        defaults.REPLICA_VSWITCH_CA_ENV: str(pki.ca),
        defaults.REPLICA_VSWITCH_CERT_ENV: str(pki.other_cert),
        defaults.REPLICA_VSWITCH_KEY_ENV: str(pki.other_key),
        defaults.REPLICA_VSWITCH_SERVER_NAME_ENV: "vswitch",
    }
    assert load(REPLICA).vm.vswitch_tls is None
    assert load(REPLICA, env=env).vm.vswitch_tls == TlsFiles(pki.ca, pki.other_cert, pki.other_key, "vswitch")
    # Flags win over the environment, each on its own.
    flags = ["--vswitch-cert", str(pki.cert), "--vswitch-key", str(pki.key), "--vswitch-server-name", "h1"]
    assert load(REPLICA, *flags, env=env).vm.vswitch_tls == TlsFiles(pki.ca, pki.cert, pki.key, "h1")
    # The server name is checked against the given CA's certificates only.
    error = error_of(REPLICA, "--vswitch-server-name", "vswitch")
    assert {v.field for v in error.violations} == {"vm.vswitch_tls.server_name"}


@pytest.mark.parametrize("part", ["ca", "cert", "key"])
def test_main_names_a_missing_agent_tls_file_in_one_line(
    part: str, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"ca": pki.ca, "cert": pki.cert, "key": pki.key} | {part: tmp_path / f"no-{part}.pem"}
    argv = [arg for name, path in files.items() for arg in (f"--vswitch-{name}", str(path))]
    line = main_line(REPLICA, argv, capsys)
    assert f"vm.vswitch_tls.{part}" in line
    assert str(tmp_path / f"no-{part}.pem") in line


@pytest.mark.parametrize("service", SERVICES, ids=str)
@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_CHECKS)
@given(data=st.data())
def test_any_mix_of_tls_paths_starts_only_with_a_matching_pair(
    service: Service, pki: Pki, tmp_path: Path, data: st.DataObject
) -> None:
    """Any of the files (or a missing one, or none) in any of the three flags: the service starts only
    with the server's own certificate and key; otherwise the error names a field of ``server``."""
    choices = [None, pki.cert, pki.key, pki.ca, pki.other_cert, pki.other_key, tmp_path / "missing.pem"]
    picked = {
        flag: data.draw(st.sampled_from(choices)) for flag in ("--tls-cert", "--tls-key", "--tls-client-ca")
    }
    argv = [part for flag, path in picked.items() if path is not None for part in (flag, str(path))]
    ca = picked["--tls-client-ca"]
    good = (picked["--tls-cert"], picked["--tls-key"]) in (
        (pki.cert, pki.key),
        (pki.other_cert, pki.other_key),
    )
    valid_ca = ca is None or ca.name.endswith(".crt")
    fields: set[str] = set()
    try:
        config = load(service, *argv)
    except ConfigError as error:
        fields = {v.field for v in error.violations}
    if fields:
        assert argv
        assert not (good and valid_ca)
        assert fields == {"server.tls"}
    else:
        assert (good and valid_ca) or not argv
        assert config.server.tls is None or config.server.tls.cert == picked["--tls-cert"]


# -- etcd credentials --------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
def test_the_etcd_password_comes_from_a_file(service: Service, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    env = {defaults.ETCD_USER_ENV: "policy", defaults.ETCD_PASSWORD_FILE_ENV: str(password)}
    assert load(service, env=env).etcd.credentials == EtcdCredentials("policy", "s3cret")
    flags = ["--etcd-user", "agent", "--etcd-password-file", str(password)]
    assert load(service, *flags).etcd.credentials == EtcdCredentials("agent", "s3cret")


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
def test_or_from_the_environment_but_never_from_a_flag(service: Service) -> None:
    env = {defaults.ETCD_USER_ENV: "policy", defaults.ETCD_PASSWORD_ENV: "s3cret"}
    assert load(service, env=env).etcd.credentials == EtcdCredentials("policy", "s3cret")
    # A flag would show the password to anyone who runs ps.
    assert "arguments" in {v.field for v in error_of(service, "--etcd-password", "s3cret").violations}


def test_the_password_is_never_printed() -> None:
    config = EtcdConfig(credentials=EtcdCredentials("policy", "s3cret"))
    assert "s3cret" not in repr(config)
    assert "policy" in repr(config)


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({defaults.ETCD_USER_ENV: "policy"}, "user 'policy' needs its password"),
        ({defaults.ETCD_PASSWORD_ENV: "s3cret"}, "a password needs its user"),
        ({defaults.ETCD_PASSWORD_FILE_ENV: "/nonexistent/password"}, "cannot read /nonexistent/password"),
    ],
)
def test_incomplete_credentials_are_refused(service: Service, setting: dict[str, str], message: str) -> None:
    error = error_of(service, env=setting)
    assert message in error.message
    assert {v.field.split(".")[0] for v in error.violations} == {"etcd"}


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
def test_an_empty_password_file_or_two_passwords_are_refused(service: Service, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    user = {defaults.ETCD_USER_ENV: "policy"}
    assert "is empty" in error_of(service, env={**user, defaults.ETCD_PASSWORD_FILE_ENV: str(empty)}).message
    full = tmp_path / "full"
    full.write_text("one")
    both = {**user, defaults.ETCD_PASSWORD_FILE_ENV: str(full), defaults.ETCD_PASSWORD_ENV: "two"}
    assert "not both" in error_of(service, env=both).message


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
def test_a_password_is_never_sent_in_plaintext_beyond_loopback(service: Service, pki: Pki) -> None:
    env = {defaults.ETCD_USER_ENV: "policy", defaults.ETCD_PASSWORD_ENV: "s3cret"}
    error = error_of(service, "--etcd", "198.18.0.5:2379", env=env)
    assert "would send the password in plaintext to 198.18.0.5:2379" in error.message
    assert load(service, "--etcd", "127.0.0.1:2379", env=env).etcd.credentials is not None
    assert load(service, "--etcd", "198.18.0.5:2379", "--etcd-ca", str(pki.ca), env=env).etcd.tls is not None


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE_CHECKS)
@given(content=st.binary(max_size=40))
@example(content=b"\r\x00")  # text mode once read this as "\n\x00"
def test_any_password_file_is_a_password_or_a_config_error(
    service: Service, content: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("password") / "password"
    path.write_bytes(content)
    env = {defaults.ETCD_USER_ENV: "policy", defaults.ETCD_PASSWORD_FILE_ENV: str(path)}
    message = ""
    try:
        credentials = load(service, env=env).etcd.credentials
    except ConfigError as error:
        message = error.message
    if message:
        assert str(path) in message
    else:
        assert credentials == EtcdCredentials("policy", content.decode().rstrip("\r\n"))
