"""A real Prometheus scrapes the services' metrics endpoints: a policy service on a real etcd, and a
primary and a DR replica site (in-process, on real sockets, a qemu-img disk) with a replicating VM.
What an operator's alerts read is asserted through Prometheus's query API: every target up, the VM's
health, RPO and last-sync gauges at the primary, its recovery points at the DR site."""

from __future__ import annotations

from pathlib import Path

import pytest

from overland import defaults
from overland.v1 import replica_pb2
from services.common.config import ServerConfig, TelemetryConfig
from services.common.etcd_auth import POLICY_USER
from services.common.etcd_process import EtcdProcess
from services.common.telemetry import Telemetry
from services.policy import PolicyConfig
from services.policy import create_server as create_policy
from services.replica.config import ReplicaConfig
from services.replica.server import ReplicaServer
from services.replica.server import create_server as create_site
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS
from tests.integration.replica.conftest import (
    MiB,
    enable_request,
    make_disk,
    primary_stub,
    qemu_io,
    replicate_now,
    state_name,
    wait_for,
)
from tests.prometheus_server import PrometheusServer, Sample, value

pytestmark = [pytest.mark.qemu, pytest.mark.etcd]

LOOPBACK_ANY_PORT = "127.0.0.1:0"
VM = "vm1"


def _metrics_address(telemetry: Telemetry | None) -> str:
    assert telemetry is not None
    assert telemetry.metrics_endpoint is not None
    return f"127.0.0.1:{telemetry.metrics_endpoint.port}"


def _site(tmp_path: Path, name: str, **options: object) -> ReplicaServer:
    config = ReplicaConfig(
        site_name=name,
        state_dir=tmp_path / f"{name}-state",
        server=ServerConfig(bind=LOOPBACK_ANY_PORT),
        telemetry=TelemetryConfig(
            defaults.REPLICA.otel_name, service_instance=name, metrics_listen=LOOPBACK_ANY_PORT
        ),
        **options,  # type: ignore[arg-type]
    )
    return create_site(config)[0]


def _one(samples: list[Sample]) -> bool:
    return len(samples) == 1


def test_prometheus_scrapes_every_service_and_sees_the_replication(
    tmp_path: Path, etcd_server: EtcdProcess
) -> None:
    policy, _port = create_policy(
        PolicyConfig(
            server=ServerConfig(bind=LOOPBACK_ANY_PORT),
            etcd=etcd_server.etcd_config(POLICY_USER, timeout=ETCD_TEST_DEADLINE_SECONDS),
            telemetry=TelemetryConfig(defaults.POLICY.otel_name, metrics_listen=LOOPBACK_ANY_PORT),
        )
    )
    dr = _site(tmp_path, "dr", allowed_primaries={"primary": tmp_path / "dr-store"})
    primary = _site(tmp_path, "primary", scheduler_tick_seconds=0.2)
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        {
            "overland-policy": [_metrics_address(policy.telemetry)],
            "overland-replica-primary": [_metrics_address(primary.telemetry)],
            "overland-replica-dr": [_metrics_address(dr.telemetry)],
        },
    )
    try:
        disk = make_disk(tmp_path / "vm1-d0.vhd", 8 * MiB)
        qemu_io(str(disk), "write -P 0xab 0 1M")
        stub = primary_stub(primary.port)
        stub.EnableReplication(enable_request(VM, {"d0": disk}, f"127.0.0.1:{dr.port}"), timeout=30)
        get = lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name=VM), timeout=10)  # noqa: E731
        wait_for(get, lambda r: state_name(r) == "REPLICATING")
        assert primary.manager is not None
        primary.manager.device(VM, "d0").write(2 * MiB, b"\x5a" * 65536)
        assert replicate_now(stub, VM).last_sequence == 2
        replication = get()
        assert replication.health == replica_pb2.REPLICATION_HEALTH_NORMAL

        prometheus.start()
        # Every target is scraped and answers.
        up = prometheus.wait_for("up", lambda s: len(s) == 3 and all(value(x) == 1 for x in s))
        assert {s["metric"]["job"] for s in up} == {
            "overland-policy",
            "overland-replica-primary",
            "overland-replica-dr",
        }
        # The primary's gauges of the VM, named as docs/telemetry.md says Prometheus shows them.
        selector = f'{{job="overland-replica-primary", overland_vm="{VM}"}}'
        health = prometheus.wait_for(f"overland_replica_health{selector}", _one)
        assert value(health[0]) == 0  # normal
        assert value(prometheus.wait_for(f"overland_replica_rpo_violated{selector}", _one)[0]) == 0
        age = prometheus.wait_for(f"overland_replica_last_sync_age_seconds{selector}", _one)
        assert 0 <= value(age[0]) < 2 * replication.settings.frequency_seconds
        cycles = prometheus.wait_for(
            f"overland_replica_cycle_duration_seconds_count{selector}", lambda s: len(s) >= 1
        )
        assert sum(value(s) for s in cycles) >= 2  # the initial replication and the delta
        # Each service's resource is its target_info: the sites are told apart by their instance id.
        info = prometheus.wait_for('target_info{job=~"overland-replica-.*"}', lambda s: len(s) == 2)
        assert {(s["metric"]["job"], s["metric"]["service_instance_id"]) for s in info} == {
            ("overland-replica-primary", "primary"),
            ("overland-replica-dr", "dr"),
        }
        # The DR site keeps the VM's recovery points (the latest at least), per primary.
        points = prometheus.wait_for(
            f'overland_replica_recovery_points{{job="overland-replica-dr", overland_vm="{VM}"}}', _one
        )
        assert points[0]["metric"]["overland_primary"] == "primary"
        assert value(points[0]) >= 1
        # An alert's expression over these series: nothing critical here.
        assert prometheus.query("overland_replica_health == 2") == []
    finally:
        prometheus.stop()
        primary.stop()
        dr.stop()
        policy.stop()
