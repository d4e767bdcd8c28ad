"""Offline checks of deploy/k8s: every object parses, selectors match pod labels, services reach
declared ports, probes use gRPC health on a served port, images are the ones ``make images`` builds,
and each container's command line is accepted by the service's own argument parser."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.__main__ import SERVICES
from services.policy.config import load_config as load_policy_config
from services.replica.config import load_config as load_replica_config
from services.vswitch.config import load_config as load_agent_config
from tools import build_images

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = REPO / "deploy" / "k8s"
NAMESPACE = "overland"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# Values the downward API would fill in on a node, for parsing the agent's command line.
NODE_FIELDS = {"spec.nodeName": "node-1", "status.hostIP": "198.18.0.10", "metadata.name": "etcd-0"}


def load_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return load_objects()


def of_kind(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from workload["spec"]["template"]["spec"]["containers"]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps, then its own variables."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = NODE_FIELDS[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


def test_everything_is_in_the_namespace(objects: list[dict[str, Any]]) -> None:
    assert named(objects, "Namespace", NAMESPACE)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


def test_workload_selectors_match_their_pod_labels(objects: list[dict[str, Any]]) -> None:
    workloads = of_kind(objects, *WORKLOAD_KINDS)
    assert {w["kind"] for w in workloads} == set(WORKLOAD_KINDS)
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


def test_services_select_a_workload_and_reach_its_ports(objects: list[dict[str, Any]]) -> None:
    workloads = of_kind(objects, *WORKLOAD_KINDS)
    for service in of_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        targets = [
            w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"service {service['metadata']['name']} selects {len(targets)} workloads"
        ports = [p for c in containers(targets[0]) for p in c.get("ports", [])]
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert any(target in (p.get("name"), p["containerPort"]) for p in ports), (service, target)


def test_statefulsets_have_their_headless_or_named_service(objects: list[dict[str, Any]]) -> None:
    for statefulset in of_kind(objects, "StatefulSet"):
        service = named(objects, "Service", statefulset["spec"]["serviceName"])
        assert (
            service["spec"]["selector"].items()
            <= statefulset["spec"]["template"]["metadata"]["labels"].items()
        )
        mounts = {m["name"] for c in containers(statefulset) for m in c.get("volumeMounts", [])}
        claims = {t["metadata"]["name"] for t in statefulset["spec"].get("volumeClaimTemplates", [])}
        assert claims, f"{statefulset['metadata']['name']} keeps no state on a volume"
        assert claims <= mounts


def test_etcd_cluster_names_exactly_its_members(objects: list[dict[str, Any]]) -> None:
    etcd = named(objects, "StatefulSet", "etcd")
    headless = named(objects, "Service", "etcd")
    assert headless["spec"]["clusterIP"] == "None"
    replicas = etcd["spec"]["replicas"]
    assert replicas == 3
    (container,) = containers(etcd)
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    members = dict(entry.split("=", 1) for entry in flags["initial-cluster"].split(","))
    assert sorted(members) == [f"etcd-{i}" for i in range(replicas)]
    for name, url in members.items():
        assert url == f"http://{name}.etcd.{NAMESPACE}.svc:2380"
    config = named(objects, "ConfigMap", "overland-config")["data"]
    clients = [f"{name}.etcd.{NAMESPACE}.svc:2379" for name in sorted(members)]
    assert config["OVERLAND_ETCD_ENDPOINTS"].split(",") == clients


def test_images_are_the_ones_make_images_builds(objects: list[dict[str, Any]]) -> None:
    overland = f"{build_images.OVERLAND_REPOSITORY}:{importlib.metadata.version('overland-services')}"
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload):
            assert container["image"] in (overland, build_images.ETCD_IMAGE), container["image"]
            # There is no registry to pull from: the images are loaded onto the nodes.
            assert container["imagePullPolicy"] == "IfNotPresent"
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]


def test_overland_containers_probe_grpc_health_on_their_port(objects: list[dict[str, Any]]) -> None:
    checked = 0
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload):
            if container["image"] == build_images.ETCD_IMAGE:
                continue
            assert container["args"][0] in SERVICES
            served = {p["containerPort"] for p in container["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] in served, (workload["metadata"]["name"], probe)
            checked += 1
    assert checked == 4


def test_each_command_line_is_accepted_by_its_service(objects: list[dict[str, Any]]) -> None:
    parsed = []
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload):
            service, *argv = container["args"]
            if container["image"] == build_images.ETCD_IMAGE:
                continue
            env = container_env(objects, container)
            if service == "policy":
                policy = load_policy_config(argv, env)
                parsed.append(policy.server.bind)
                assert len(policy.etcd.endpoints) == 3
            elif service == "vswitch":
                agent = load_agent_config(argv, env)
                parsed.append(agent.server.bind)
                assert (agent.host_name, agent.pa_ip) == ("node-1", "198.18.0.10")
                assert len(agent.etcd.endpoints) == 3
                assert not agent.table_only
            else:
                parsed.append(load_replica_config(argv, env).server.bind)
    assert sorted(parsed) == ["0.0.0.0:50051", "0.0.0.0:50052", "0.0.0.0:50053", "0.0.0.0:50053"]


def test_the_agent_gets_what_its_datapath_needs(objects: list[dict[str, Any]]) -> None:
    daemonset = named(objects, "DaemonSet", "vswitch")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (container,) = pod["containers"]
    assert {"NET_ADMIN", "NET_RAW"} <= set(container["securityContext"]["capabilities"]["add"])
    tun = next(v for v in pod["volumes"] if v["name"] == "tun")
    assert tun["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"}
    assert {"name": "tun", "mountPath": "/dev/net/tun"} in container["volumeMounts"]
