"""deploy/k8s/prometheus.yaml checked by Prometheus's own promtool (the Debian package ``prometheus``,
which ``make`` installs): the alert rules parse, the alerts fire as their unit tests say
(prometheus_alerts_test.yml), and the scrape configuration is valid; and every scrape job finds the
service it names, on the port that service serves its metrics on, over TLS with the name its
certificate has."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from overland import defaults
from services.common.config import TelemetryConfig
from services.policy.config import load_config as load_policy_config
from services.replica.config import load_config as load_replica_config
from services.vswitch.config import load_config as load_agent_config
from tests.unit.containers.test_k8s_manifests import (
    command_line,
    load_objects,
    named,
    overland_containers,
    secrets,  # noqa: F401 (the Secrets fixture, shared)
)

HERE = Path(__file__).parent
CONFIG_DIR = "/etc/prometheus"


def service_telemetry(service: str, argv: list[str], env: dict[str, str]) -> TelemetryConfig:
    if service == "policy":
        return load_policy_config(argv, env).telemetry
    if service == "vswitch":
        return load_agent_config(argv, env).telemetry
    return load_replica_config(argv, env).telemetry


PORTS = {service.name: service.metrics_port for service in defaults.SERVICES}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make deps-apt` installs the Debian package prometheus"
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    data: dict[str, str] = named(load_objects(), "ConfigMap", "overland-prometheus")["data"]
    return data


@pytest.fixture(scope="module")
def scrape(files: dict[str, str]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(files["prometheus.yml"])
    return loaded


@pytest.fixture
def rules(tmp_path: Path, files: dict[str, str]) -> Path:
    path = tmp_path / "overland-alerts.yml"
    path.write_text(files["overland-alerts.yml"])
    return path


def test_the_alert_rules_are_valid(rules: Path) -> None:
    checked = promtool("check", "rules", rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_the_alerts_fire_as_their_unit_tests_say(rules: Path) -> None:
    tests = rules.parent / "alerts_test.yml"
    shutil.copy(HERE / "prometheus_alerts_test.yml", tests)
    tested = promtool("test", "rules", tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_scrape_configuration_is_valid(
    tmp_path: Path,
    files: dict[str, str],
    scrape: dict[str, Any],
    secrets: Path,  # noqa: F811
) -> None:
    # Debian's Prometheus is built without Kubernetes discovery: promtool checks everything else
    # with fixed targets in its place, the TLS files tools/pki.py k8s makes, and the rules.
    tls_dir = secrets / "prometheus-scrape-tls"
    for job in scrape["scrape_configs"]:
        assert len(job.pop("kubernetes_sd_configs")) == 1
        job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    text = yaml.safe_dump(scrape).replace(f"{CONFIG_DIR}/overland-tls", str(tls_dir))
    (tmp_path / "overland-alerts.yml").write_text(files["overland-alerts.yml"])
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(CONFIG_DIR, str(tmp_path)))
    checked = promtool("check", "config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_each_job_scrapes_one_workload_on_its_metrics_port_over_mutual_tls(
    scrape: dict[str, Any],
    secrets: Path,  # noqa: F811
) -> None:
    objects = load_objects()
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    seen = set()
    for workload, container in overland_containers(objects):
        name = workload["metadata"]["name"]
        service = container["args"][0]
        job = jobs[f"overland-{name}"]
        keep = job["relabel_configs"][0]
        assert (keep["source_labels"], keep["regex"], keep["action"]) == (
            ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            name,
            "keep",
        )
        assert job["scheme"] == "https"
        # The name the job verifies is one the service's certificate holds.
        assert job["tls_config"]["server_name"] == f"{name}.overland.svc"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/scheme"] == "https"
        port = int(annotations["prometheus.io/port"])
        assert port == PORTS[service]
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        argv, env = command_line(objects, workload, container, secrets)
        telemetry = service_telemetry(service, argv[1:], env)
        assert telemetry.metrics_listen == f"0.0.0.0:{port}"
        # HTTPS, and only for clients with a certificate of the services' CA (as Prometheus has).
        assert telemetry.metrics_tls is not None
        assert telemetry.metrics_tls.ca is not None
        assert not telemetry.insecure_listen
        seen.add(job["job_name"])
    assert seen == set(jobs)
