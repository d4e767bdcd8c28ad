"""``load_config`` of the three services: the same flags and environment variables for the same things,
flags over the environment over ``overland.defaults``, and every bad value, from either, the one
``ConfigError`` naming its field; ``main`` prints it as one line and exits 2, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overland import ClientConfig, defaults
from overland import Service as ClientService
from overland.defaults import ServiceDefaults
from services.common.config import ConfigError
from services.common.errors import FieldViolation
from services.policy import config as policy_config
from services.policy import process as policy_main
from services.replica import config as replica_config
from services.replica import process as replica_main
from services.vswitch import config as vswitch_config
from services.vswitch import process as vswitch_main
from tools.pki import CertificateAuthority


@dataclass(frozen=True)
class Service:
    defaults: ServiceDefaults
    load: Callable[[Sequence[str] | None, Mapping[str, str] | None], Any]
    main: Callable[[Sequence[str] | None], int]
    # Flags that make a valid command line of this service, with nothing else given.
    required: tuple[str, ...]
    uses_etcd: bool
    # How main names the service on its one line of error.
    what: str

    def __str__(self) -> str:
        return self.defaults.name


POLICY = Service(
    defaults.POLICY, policy_config.load_config, policy_main.main, (), uses_etcd=True, what="policy service"
)
VSWITCH = Service(
    defaults.VSWITCH,
    vswitch_config.load_config,
    vswitch_main.main,
    ("--host-name", "host-1", "--pa-ip", "198.18.0.1", "--table-only"),
    uses_etcd=True,
    what="vswitch agent",
)
REPLICA = Service(
    defaults.REPLICA,
    replica_config.load_config,
    replica_main.main,
    (),
    uses_etcd=False,
    what="replica service",
)
SERVICES = [POLICY, VSWITCH, REPLICA]
ETCD_SERVICES = [s for s in SERVICES if s.uses_etcd]


def load(service: Service, *argv: str, env: Mapping[str, str] | None = None) -> Any:
    return service.load([*service.required, *argv], env or {})


def refused(service: Service, *argv: str, env: Mapping[str, str] | None = None) -> set[str]:
    """The fields the configuration error names."""
    with pytest.raises(ConfigError) as caught:
        load(service, *argv, env=env)
    assert caught.value.message.startswith(("invalid", "python -m services."))
    return {v.field for v in caught.value.violations}


@pytest.fixture(autouse=True)
def no_overland_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` reads os.environ: the runner's own OVERLAND_* and OTEL_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith(("OVERLAND_", "OTEL_")):
            monkeypatch.delenv(name)


# -- defaults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_with_nothing_given_each_service_listens_where_clients_look(service: Service) -> None:
    config = load(service)
    assert config.server.bind == service.defaults.address
    assert config.server.tls is None
    assert (config.log.level, config.log.json) == ("INFO", False)
    assert not config.telemetry.enabled
    assert config.telemetry.service_name.startswith(service.defaults.otel_name)
    if service.uses_etcd:
        assert config.etcd.endpoints == (defaults.ETCD_ENDPOINT,)
        assert config.etcd.timeout == defaults.ETCD_TIMEOUT_SECONDS
        assert config.etcd.tls is None


def test_the_sdk_looks_for_each_service_on_its_default_port() -> None:
    client = ClientConfig.from_env({})
    for service, server in zip(ClientService, SERVICES, strict=True):
        assert client.endpoint(service).address == server.defaults.address
        assert service.env_var == server.defaults.endpoint_env


def test_the_defaults_are_distinct_and_documented() -> None:
    ports = [s.port for s in defaults.SERVICES]
    assert len(set(ports)) == len(ports)
    variables = {value for name, value in vars(defaults).items() if name.endswith("_ENV")}
    for service in defaults.SERVICES:
        variables |= {
            service.endpoint_env,
            service.bind_env,
            service.tls_cert_env,
            service.tls_key_env,
            service.tls_client_ca_env,
        }
    docs = "".join(p.read_text() for p in (Path(__file__).parents[3] / "docs").glob("*.md"))
    assert sorted(v for v in variables if v not in docs) == []


# -- flags over the environment over the defaults ------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_the_environment_sets_what_no_flag_does(service: Service, tmp_path: Path) -> None:
    env = {
        service.defaults.bind_env: "0.0.0.0:7000",
        service.defaults.insecure_listen_env: "1",
        defaults.LOG_LEVEL_ENV: "debug",
        defaults.LOG_JSON_ENV: "1",
        defaults.SPAN_FILE_ENV: str(tmp_path / "spans.jsonl"),
        defaults.METRIC_INTERVAL_ENV: "2500",
        defaults.ETCD_ENDPOINTS_ENV: "198.18.0.5:2379, http://198.18.0.6:2379",
        defaults.ETCD_TIMEOUT_ENV: "2.5",
    }
    config = load(service, env=env)
    assert config.server.bind == "0.0.0.0:7000"
    assert config.server.insecure_listen
    assert (config.log.level, config.log.json) == ("DEBUG", True)
    assert config.telemetry.span_file == str(tmp_path / "spans.jsonl")
    assert config.telemetry.metric_interval_seconds == 2.5
    if service.uses_etcd:
        assert config.etcd.endpoints == ("198.18.0.5:2379", "http://198.18.0.6:2379")
        assert config.etcd.timeout == 2.5


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_flags_win_over_the_environment(service: Service) -> None:
    env = {
        service.defaults.bind_env: "0.0.0.0:7000",
        defaults.LOG_LEVEL_ENV: "DEBUG",
        defaults.ETCD_ENDPOINTS_ENV: "198.18.0.5:2379",
        defaults.ETCD_TIMEOUT_ENV: "2.5",
    }
    flags = ["--bind", "127.0.0.1:7001", "--log-level", "ERROR"]
    if service.uses_etcd:
        flags += ["--etcd", "198.18.0.7:2379", "--etcd-timeout", "4"]
    config = load(service, *flags, env=env)
    assert (config.server.bind, config.log.level) == ("127.0.0.1:7001", "ERROR")
    if service.uses_etcd:
        assert (config.etcd.endpoints, config.etcd.timeout) == (("198.18.0.7:2379",), 4.0)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real CA, certificate and key (the services read and check them at start)."""
    directory = tmp_path_factory.mktemp("pki")
    issued = CertificateAuthority.create(directory).issue(directory, "server", "localhost", server=True)
    assert issued.ca is not None
    assert issued.cert is not None
    assert issued.key is not None
    return {"ca": issued.ca, "cert": issued.cert, "key": issued.key}


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_server_tls_from_the_service_variables(service: Service, tls_files: dict[str, Path]) -> None:
    files = tls_files
    env = {
        service.defaults.tls_cert_env: str(files["cert"]),
        service.defaults.tls_key_env: str(files["key"]),
        service.defaults.tls_client_ca_env: str(files["ca"]),
    }
    tls = load(service, env=env).server.tls
    assert (tls.cert, tls.key, tls.ca) == (files["cert"], files["key"], files["ca"])


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
def test_etcd_tls_from_flags(service: Service, tls_files: dict[str, Path]) -> None:
    files = tls_files
    flags = [
        "--etcd-ca",
        str(files["ca"]),
        "--etcd-cert",
        str(files["cert"]),
        "--etcd-key",
        str(files["key"]),
    ]
    tls = load(service, *flags).etcd.tls
    assert (tls.ca, tls.cert, tls.key) == (files["ca"], files["cert"], files["key"])


# -- bad values name their field -------------------------------------------------------------------

SHARED_BAD_FLAGS = [
    (["--bind", "nowhere"], "server.bind"),
    (["--bind", "127.0.0.1:65536"], "server.bind"),
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "server.tls"),
    (["--tls-client-ca", "/nonexistent/ca.pem"], "server.tls"),
    (["--log-level", "LOUD"], "log.level"),
    (["--no-such-flag"], "arguments"),
]
ETCD_BAD_FLAGS = [
    (["--etcd", "no-port"], "etcd.endpoints"),
    (["--etcd", ","], "etcd.endpoints"),
    (["--etcd-timeout", "soon"], "etcd.timeout"),
    (["--etcd-timeout", "0"], "etcd.timeout"),
    (["--etcd-timeout", "-1"], "etcd.timeout"),
    (["--etcd-timeout", "nan"], "etcd.timeout"),
    (["--etcd-timeout", "inf"], "etcd.timeout"),
    (["--etcd-timeout", "1e6"], "etcd.timeout"),
    (["--etcd-ca", "/nonexistent/ca.pem"], "etcd.tls"),
    (["--etcd-cert", "/nonexistent/cert.pem"], "etcd.tls"),
]
OWN_BAD_FLAGS = [
    (POLICY, ["--workers", "two"], "workers"),
    (POLICY, ["--workers", "0"], "workers"),
    (POLICY, ["--workers", "2", "--bind", "127.0.0.1:0"], "workers"),
    (VSWITCH, ["--pa-ip", "198.18.0.300"], "pa_ip"),
    (VSWITCH, ["--host-name=-bad"], "host_name"),
    (VSWITCH, ["--lease-ttl", "ten"], "lease_ttl"),
    (VSWITCH, ["--lease-ttl", "1"], "lease_ttl"),
    (VSWITCH, ["--page-size", "1_000"], "page_size"),
    (VSWITCH, ["--pa-mtu", "50"], "pa_mtu"),
    (VSWITCH, ["--rdid", "a/b"], "rdids"),
    (REPLICA, ["--role", "dr"], "arguments"),
    (REPLICA, ["--site-name", "two words"], "site_name"),
    (REPLICA, ["--accel", "warp"], "vm.accel"),
    (REPLICA, ["--vm-netns", "a/b"], "vm.netns"),
    (REPLICA, ["--vswitch-endpoint", "nowhere"], "vm.vswitch_endpoint"),
    (REPLICA, ["--nbd-socket", "/" + "s" * 120], "nbd_socket"),
    (REPLICA, ["--allow", "nodir"], "allowed_primaries"),
    (REPLICA, ["--allow", "bad name=/srv"], "allowed_primaries[bad name]"),
    (REPLICA, ["--tick", "often"], "scheduler_tick_seconds"),
    (REPLICA, ["--tick", "0"], "scheduler_tick_seconds"),
    (REPLICA, ["--nbd-bind", "nowhere"], "nbd_bind"),
    (REPLICA, ["--client-ca", "/nonexistent/ca.pem"], "client_tls.ca"),
]


@pytest.mark.parametrize("service", SERVICES, ids=str)
@pytest.mark.parametrize(("argv", "field"), SHARED_BAD_FLAGS)
def test_a_bad_shared_flag_names_its_field(service: Service, argv: list[str], field: str) -> None:
    assert field in refused(service, *argv)


@pytest.mark.parametrize("service", ETCD_SERVICES, ids=str)
@pytest.mark.parametrize(("argv", "field"), ETCD_BAD_FLAGS)
def test_a_bad_etcd_flag_names_its_field(service: Service, argv: list[str], field: str) -> None:
    assert field in refused(service, *argv)


@pytest.mark.parametrize(("service", "argv", "field"), OWN_BAD_FLAGS, ids=str)
def test_a_bad_service_flag_names_its_field(service: Service, argv: list[str], field: str) -> None:
    assert field in refused(service, *argv)


@pytest.mark.parametrize(
    ("service", "variable", "value", "field"),
    [
        (POLICY, defaults.POLICY_WORKERS_ENV, "many", "workers"),
        (POLICY, defaults.ETCD_TIMEOUT_ENV, "5s", "etcd.timeout"),
        (VSWITCH, defaults.ETCD_ENDPOINTS_ENV, "nowhere", "etcd.endpoints"),
        (VSWITCH, defaults.VSWITCH_LEASE_TTL_ENV, "abc", "lease_ttl"),
        (VSWITCH, defaults.VSWITCH_PA_MTU_ENV, "1500.5", "pa_mtu"),
        (REPLICA, defaults.REPLICA.bind_env, "nowhere", "server.bind"),
        (REPLICA, defaults.LOG_JSON_ENV, "maybe", "log.json"),
        (POLICY, defaults.METRIC_INTERVAL_ENV, "10s", "telemetry.metric_interval_seconds"),
    ],
)
def test_a_bad_variable_names_its_field(service: Service, variable: str, value: str, field: str) -> None:
    assert field in refused(service, env={variable: value})


def test_every_bad_field_is_named_at_once() -> None:
    fields = refused(POLICY, "--bind", "nowhere", "--etcd-timeout", "soon", "--log-level", "LOUD")
    assert {"server.bind", "etcd.timeout", "log.level"} <= fields


def test_the_agent_reads_the_shared_etcd_variable_only() -> None:
    config = load(
        VSWITCH, env={defaults.ETCD_ENDPOINTS_ENV: "198.18.0.5:2379", "OVERLAND_VSWITCH_ETCD": "x:1"}
    )
    assert config.etcd.endpoints == ("198.18.0.5:2379",)


def test_switches_come_from_flags_or_variables() -> None:
    required = ["--host-name", "h", "--pa-ip", "198.18.0.1"]
    assert vswitch_config.load_config(required, {defaults.VSWITCH_TABLE_ONLY_ENV: "true"}).table_only
    assert vswitch_config.load_config([*required, "--table-only"], {}).table_only
    assert not vswitch_config.load_config(required, {defaults.VSWITCH_TABLE_ONLY_ENV: "0"}).table_only


# -- free text: a ConfigError or a valid config, never anything else ------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
SHARED_FLAGS = ["--bind", "--tls-cert", "--tls-client-ca", "--log-level"]
ETCD_FLAGS = ["--etcd", "--etcd-timeout", "--etcd-ca"]
OWN_FLAGS = {
    POLICY: ["--workers"],
    VSWITCH: ["--host-name", "--pa-ip", "--lease-ttl", "--page-size", "--pa-mtu", "--rdid"],
    REPLICA: [
        "--allow",
        "--tick",
        "--nbd-bind",
        "--nbd-socket",
        "--site-name",
        "--state-dir",
        "--accel",
        "--vm-netns",
        "--vswitch-endpoint",
    ],
}
VARIABLES = sorted(
    {v for n, v in vars(defaults).items() if n.endswith("_ENV")}
    | {getattr(s.defaults, f"{part}_env") for s in SERVICES for part in ("bind", "tls_cert", "tls_client_ca")}
)
FLAGS = [
    (service, flag)
    for service in SERVICES
    for flag in [*SHARED_FLAGS, *(ETCD_FLAGS if service.uses_etcd else []), *OWN_FLAGS[service]]
]


def assert_config_or_error(load_it: Callable[[], Any]) -> None:
    """A valid config, or a ConfigError that names at least one field: nothing else escapes."""
    violations: Sequence[FieldViolation] = ()
    try:
        config = load_it()
    except ConfigError as error:
        violations = error.violations
        assert violations
    else:
        assert config.violations() == []


@pytest.mark.parametrize(("service", "flag"), FLAGS, ids=str)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=TEXT)
def test_any_flag_value_is_a_config_or_a_config_error(service: Service, flag: str, value: str) -> None:
    assert_config_or_error(lambda: load(service, f"{flag}={value}"))


@pytest.mark.parametrize("service", SERVICES, ids=str)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(VARIABLES), TEXT))
def test_any_environment_is_a_config_or_a_config_error(service: Service, values: dict[str, str]) -> None:
    assert_config_or_error(lambda: load(service, env=values))


@pytest.mark.parametrize(("service", "flag"), FLAGS, ids=str)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=TEXT)
def test_main_refuses_a_bad_configuration_in_one_line(
    service: Service, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bad --nbd-bind/--bind guarantees the service never starts, whatever the free text is.
    poison = ["--nbd-bind", "x"] if flag == "--bind" else ["--bind", "x"]
    status = service.main([*service.required, *poison, f"{flag}={value}"])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert err.startswith(f"{service.what}: ")
