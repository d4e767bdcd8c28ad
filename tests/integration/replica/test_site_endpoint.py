"""The endpoint a site tells other sites (the deltas' header; a reverse replicates back to it) is one
they can call: a site bound to port 0 names the port it got."""

from __future__ import annotations

from pathlib import Path

from services.common.config import ServerConfig
from services.replica.config import ReplicaConfig
from services.replica.server import create_server


def test_a_config_bound_to_port_0_names_the_port_it_got() -> None:
    config = ReplicaConfig(server=ServerConfig(bind="127.0.0.1:0"))
    assert config.endpoint == "127.0.0.1:0"
    assert config.bound_to(40123).endpoint == "127.0.0.1:40123"


def test_a_config_with_a_port_or_an_endpoint_keeps_it() -> None:
    fixed = ReplicaConfig(server=ServerConfig(bind="127.0.0.1:50053"))
    assert fixed.bound_to(40123) is fixed
    told = ReplicaConfig(server=ServerConfig(bind="127.0.0.1:0"), site_endpoint="site-a.example:7000")
    assert told.bound_to(40123).endpoint == "site-a.example:7000"


def test_a_site_on_port_0_advertises_its_real_port(tmp_path: Path) -> None:
    server, port = create_server(
        ReplicaConfig(site_name="a", server=ServerConfig(bind="127.0.0.1:0"), state_dir=tmp_path / "state")
    )
    try:
        assert port != 0
        assert server.manager.config.endpoint == f"127.0.0.1:{port}"
        assert server.failover is not None
        assert server.failover.config.endpoint == f"127.0.0.1:{port}"
    finally:
        server.stop()
