"""PolicyConfig: built once from the environment and arguments, validated with every bad field named."""

from __future__ import annotations

import pytest

from services.policy import InvalidPolicyConfig, load_config


def test_arguments_override_the_environment() -> None:
    config = load_config(
        ["--bind", "127.0.0.1:7000", "--etcd-timeout", "2.5"],
        env={"OVERLAND_POLICY_BIND": "0.0.0.0:1", "OVERLAND_ETCD_ENDPOINTS": "a:1, http://b:2"},
    )
    assert config.server.bind == "127.0.0.1:7000"
    assert config.etcd.endpoints == ("a:1", "http://b:2")
    assert config.etcd.timeout == 2.5


def test_defaults_are_valid() -> None:
    config = load_config([], env={})
    assert config.etcd.timeout > 0
    assert config.server.tls is None


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--bind", "nowhere"], "server"),
        (["--etcd-timeout", "0"], "etcd"),
        (["--etcd-timeout", "soon"], "etcd_timeout"),
        (["--etcd", "no-port"], "etcd"),
        (["--log-level", "LOUD"], "log_level"),
        (["--etcd-ca", "/nonexistent/ca.pem"], "etcd"),
    ],
)
def test_bad_settings_are_refused_at_start(argv: list[str], field: str) -> None:
    with pytest.raises(InvalidPolicyConfig) as caught:
        load_config(argv, env={})
    assert field in {v.field for v in caught.value.violations}
