"""PolicyConfig: built once from the environment and arguments, validated with every bad field named."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.policy import PolicyConfig, load_config


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
    assert config == PolicyConfig()
    assert config.etcd.timeout > 0
    assert config.server.tls is None
    assert (config.workers, config.server.reuse_port) == (1, False)


def test_several_workers_share_the_port() -> None:
    config = load_config(["--bind", "127.0.0.1:7000"], env={"OVERLAND_POLICY_WORKERS": "3"})
    assert (config.workers, config.server.reuse_port) == (3, True)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--bind", "nowhere"], "server.bind"),
        (["--etcd-timeout", "0"], "etcd.timeout"),
        (["--etcd-timeout", "soon"], "etcd.timeout"),
        (["--etcd", "no-port"], "etcd.endpoints"),
        (["--log-level", "LOUD"], "log.level"),
        (["--etcd-ca", "/nonexistent/ca.pem"], "etcd.tls"),
        (["--workers", "0"], "workers"),
        (["--workers", "33"], "workers"),
        (["--workers", "two"], "workers"),
        (["--workers", "2", "--bind", "127.0.0.1:0"], "workers"),
    ],
)
def test_bad_settings_are_refused_at_start(argv: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(argv, env={})
    assert field in {v.field for v in caught.value.violations}
