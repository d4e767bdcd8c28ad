"""Offline checks of deploy/k8s: every object parses, selectors match pod labels, services reach
declared ports, probes ask gRPC health (over TLS) on a served port, images are the ones ``make images``
builds, and each container's command line is accepted by the service's own argument parser.

Security (docs/security.md): the Secrets the manifests mount are made by ``tools/pki.py k8s`` and
each container is checked against real files mounted where it looks for them: every Overland service
serves mutual TLS and nothing listens in plaintext beyond loopback, etcd's clients and peers speak TLS
with client certificates, each service reaches etcd over TLS as its own user (each agent as its
node's), the etcd-auth Job creates exactly those users, and each replica site reaches its node's agent
over mutual TLS as that node's host."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from services.__main__ import SERVICES
from services.common import etcd_auth
from services.common.access import decide
from services.common.config import is_loopback
from services.common.identity import Identity, Role, parse_identity_uri
from services.policy.config import load_config as load_policy_config
from services.replica.config import load_config as load_replica_config
from services.vswitch import access as vswitch_access
from services.vswitch.config import load_config as load_agent_config
from tools import build_images, pki

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = REPO / "deploy" / "k8s"
NAMESPACE = "overland"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# Values the downward API would fill in on a node, for parsing the agent's command line.
NODE = "node-1"
NODE_FIELDS = {"spec.nodeName": NODE, "status.hostIP": "198.18.0.10", "metadata.name": "etcd-0"}
# What a provisioned node holds for its agent: its etcd password (tools/pki.py k8s says how).
NODE_PASSWORD_DIR = "/etc/overland/vswitch"
PROBE_MODULE = "services.common.health_probe"


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
    """The environment a container starts with: its ConfigMaps, then its own variables (``$(NAME)``
    expanded from those before it, as the kubelet does)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], variable["value"])
            env[variable["name"]] = value
        else:
            env[variable["name"]] = NODE_FIELDS[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Secrets of the manifests as ``tools/pki.py k8s`` makes them (one directory each), and a node
    provisioned as its commands say (under ``node/``: its agent's etcd password, its site's certificate)."""
    directory = tmp_path_factory.mktemp("secrets")
    commands = pki.kubernetes(directory, [NODE])
    installed = 0
    for command in commands:
        node_step = re.fullmatch(rf"# on node {NODE}: install -D -m 0600 (\S+) (/\S+)", command)
        if node_step:
            target = directory / "node" / node_step.group(2).strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(node_step.group(1)).read_bytes())
            installed += 1
    assert installed == 3
    assert (directory / "node" / NODE_PASSWORD_DIR.strip("/") / "etcd-password").is_file()
    return directory


def mounted(workload: dict[str, Any], container: dict[str, Any], secrets: Path) -> dict[str, Path]:
    """Where each of the container's mounts would find its files here: a Secret's directory (only its
    listed items), or the provisioned node's directory for a host path."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    found: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        # Not a pod volume: a StatefulSet's claim (state, not configuration).
        volume = volumes.get(mount["name"], {})
        if "secret" in volume:
            source = secrets / volume["secret"]["secretName"]
            assert source.is_dir(), f"tools/pki.py k8s makes no Secret {volume['secret']['secretName']}"
            items = volume["secret"].get("items")
            if items:
                subset = secrets / "items" / workload["metadata"]["name"] / mount["name"]
                subset.mkdir(parents=True, exist_ok=True)
                for item in items:
                    (subset / item["path"]).write_bytes((source / item["key"]).read_bytes())
                source = subset
            found[mount["mountPath"]] = source
        elif volume.get("hostPath", {}).get("type") == "Directory":
            found[mount["mountPath"]] = secrets / "node" / volume["hostPath"]["path"].strip("/")
    return found


def localized(text: str, mounts: dict[str, Path]) -> str:
    """``text`` with each mount path (a whole path segment: /etc/overland/etcd is not the start of
    /etc/overland/etcd-users) replaced by where its files are here."""
    if not mounts:
        return text
    longest_first = sorted(mounts, key=len, reverse=True)
    pattern = "|".join(re.escape(path) for path in longest_first)
    return re.sub(f"({pattern})(?=/|$)", lambda match: str(mounts[match.group(1)]), text)


def command_line(
    objects: list[dict[str, Any]], workload: dict[str, Any], container: dict[str, Any], secrets: Path
) -> tuple[list[str], dict[str, str]]:
    """The container's arguments and environment, with mounted paths pointing at real files."""
    mounts = mounted(workload, container, secrets)
    argv = [localized(arg, mounts) for arg in container["args"]]
    env = {name: localized(value, mounts) for name, value in container_env(objects, container).items()}
    return argv, env


def overland_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload):
            if container["image"] != build_images.ETCD_IMAGE:
                yield workload, container


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
        assert url == f"https://{name}.etcd.{NAMESPACE}.svc:2380"
    config = named(objects, "ConfigMap", "overland-config")["data"]
    clients = [f"{name}.etcd.{NAMESPACE}.svc:2379" for name in sorted(members)]
    assert config["OVERLAND_ETCD_ENDPOINTS"].split(",") == clients


def test_images_are_the_ones_make_images_builds(objects: list[dict[str, Any]]) -> None:
    overland = f"{build_images.OVERLAND_REPOSITORY}:{importlib.metadata.version('overland-services')}"
    for workload in of_kind(objects, *WORKLOAD_KINDS, "Job"):
        for container in containers(workload):
            assert container["image"] in (overland, build_images.ETCD_IMAGE), container["image"]
            # There is no registry to pull from: the images are loaded onto the nodes.
            assert container["imagePullPolicy"] == "IfNotPresent"
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]


def test_overland_containers_probe_health_over_tls_on_their_port(objects: list[dict[str, Any]]) -> None:
    checked = 0
    for workload, container in overland_containers(objects):
        assert container["args"][0] in SERVICES
        served = {p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            # The kubelet's grpc probe has no TLS; the exec probe reads the clients' TLS variables.
            *python, flag, module, target = container[probe]["exec"]["command"]
            assert (python, flag, module) == (["/opt/overland/bin/python"], "-m", PROBE_MODULE)
            host, _, port = target.rpartition(":")
            assert is_loopback(host)
            assert int(port) in served, (workload["metadata"]["name"], probe)
        env = container_env(objects, container)
        assert {"OVERLAND_TLS_CA", "OVERLAND_TLS_CERT", "OVERLAND_TLS_KEY"} <= env.keys()
        checked += 1
    assert checked == 4


def test_each_command_line_is_accepted_by_its_service(objects: list[dict[str, Any]], secrets: Path) -> None:
    parsed = []
    for workload, container in overland_containers(objects):
        service = container["args"][0]
        argv, env = command_line(objects, workload, container, secrets)
        if service == "policy":
            policy = load_policy_config(argv[1:], env)
            parsed.append(policy.server.bind)
            assert len(policy.etcd.endpoints) == 3
        elif service == "vswitch":
            agent = load_agent_config(argv[1:], env)
            parsed.append(agent.server.bind)
            assert (agent.host_name, agent.pa_ip) == (NODE, "198.18.0.10")
            assert len(agent.etcd.endpoints) == 3
            assert not agent.table_only
        else:
            parsed.append(load_replica_config(argv[1:], env).server.bind)
    assert sorted(parsed) == ["0.0.0.0:50051", "0.0.0.0:50052", "0.0.0.0:50053", "0.0.0.0:50053"]


def test_every_service_serves_mutual_tls_and_nothing_plaintext_beyond_loopback(
    objects: list[dict[str, Any]], secrets: Path
) -> None:
    for workload, container in overland_containers(objects):
        argv, env = command_line(objects, workload, container, secrets)
        name = workload["metadata"]["name"]
        if argv[0] == "replica":
            replica = load_replica_config(argv[1:], env)
            # NBD has no TLS: loopback only. The sites authenticate each other by certificate.
            assert is_loopback(replica.nbd_bind.rpartition(":")[0]), name
            assert not replica.insecure_primary_header
            assert replica.client_tls is not None
            assert set(replica.allowed_primaries) <= {"site-a", "site-b"} - {replica.site_name}
            server = replica.server
        else:
            server = (load_policy_config if argv[0] == "policy" else load_agent_config)(argv[1:], env).server
        assert server.tls is not None, name
        assert server.tls.ca is not None, f"{name}: clients are not authenticated"
        assert not server.insecure_listen, name


def test_each_site_reaches_its_nodes_agent_over_mutual_tls_as_that_host(
    objects: list[dict[str, Any]], secrets: Path
) -> None:
    """The site's --vswitch-* files: the agent's CA, and a certificate that the agent's rules let attach,
    list and detach ports on this node's agent (a host identity of this node, and no more)."""
    configs: dict[str, Any] = {}
    for workload, container in overland_containers(objects):
        argv, env = command_line(objects, workload, container, secrets)
        if argv[0] == "vswitch":
            configs["vswitch"] = load_agent_config(argv[1:], env)
        elif argv[0] == "replica":
            configs[workload["metadata"]["name"]] = load_replica_config(argv[1:], env)
    agent = configs.pop("vswitch")
    assert sorted(configs) == ["replica-site-a", "replica-site-b"]
    agent_cert = x509.load_pem_x509_certificate((secrets / "vswitch-tls" / "tls.crt").read_bytes())
    agent_names = agent_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    node_ip = NODE_FIELDS["status.hostIP"]
    for name, site in configs.items():
        tls = site.vm.vswitch_tls
        assert tls is not None, name
        assert None not in (tls.ca, tls.cert, tls.key), name
        # The agent listens on the node's address (host network); its certificate names "vswitch".
        assert site.vm.vswitch_endpoint == f"{node_ip}:{agent.server.bind.rpartition(':')[2]}"
        assert tls.server_name in agent_names.get_values_for_type(x509.DNSName)
        ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
        agent_cert.verify_directly_issued_by(ca)
        assert agent.server.tls is not None
        assert agent.server.tls.ca is not None
        client_ca = x509.load_pem_x509_certificate(agent.server.tls.ca.read_bytes())
        client = x509.load_pem_x509_certificate(tls.cert.read_bytes())
        client.verify_directly_issued_by(client_ca)
        uris = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        (uri,) = uris.get_values_for_type(x509.UniformResourceIdentifier)
        assert parse_identity_uri(uri) == (Role.HOST, NODE)
        # The site is its node's host, as the agent is.
        assert site.host_name == agent.host_name == NODE
        identity = Identity(Role.HOST, NODE)
        for method in ("AttachPort", "ListPorts", "DetachPort"):
            full = f"/{vswitch_access.SERVICE.full_name}/{method}"
            assert decide(vswitch_access.rules(agent.host_name), identity, full, object()).grant, method
            assert not decide(vswitch_access.rules("node-2"), identity, full, object()).grant, method


def test_each_service_reaches_etcd_over_tls_as_its_own_user(
    objects: list[dict[str, Any]], secrets: Path
) -> None:
    users = {}
    for workload, container in overland_containers(objects):
        argv, env = command_line(objects, workload, container, secrets)
        if argv[0] == "replica":
            continue
        loader = load_policy_config if argv[0] == "policy" else load_agent_config
        etcd = loader(argv[1:], env).etcd
        assert etcd.tls is not None
        assert None not in (etcd.tls.ca, etcd.tls.cert, etcd.tls.key)
        assert etcd.credentials is not None
        assert etcd.credentials.password
        users[argv[0]] = etcd.credentials.user
    # Each node's agent is its own user: it may write only its own host's keys.
    assert users == {"policy": etcd_auth.POLICY_USER, "vswitch": etcd_auth.host_user(NODE)}


def test_the_etcd_auth_job_creates_those_users(objects: list[dict[str, Any]], secrets: Path) -> None:
    (job,) = of_kind(objects, "Job")
    (container,) = containers(job)
    assert container["command"] == ["/opt/overland/bin/python", "-m", "services.common.etcd_auth"]
    argv, env = command_line(objects, job, container, secrets)
    config, plan, passwords = etcd_auth.load(argv, env)
    assert config.tls is not None
    assert config.credentials is not None
    assert config.credentials.user == etcd_auth.ROOT_USER
    assert {u.name for u in plan.users} == {"root", "policy", etcd_auth.host_user(NODE)}
    assert set(passwords) == {u.name for u in plan.users}


def test_etcd_speaks_tls_to_clients_and_peers_with_client_certificates(objects: list[dict[str, Any]]) -> None:
    etcd = named(objects, "StatefulSet", "etcd")
    (container,) = containers(etcd)
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    for name in (
        "listen-client-urls",
        "advertise-client-urls",
        "listen-peer-urls",
        "initial-advertise-peer-urls",
    ):
        assert flags[name].startswith("https://"), name
    assert all(
        member.split("=", 1)[1].startswith("https://") for member in flags["initial-cluster"].split(",")
    )
    assert flags["client-cert-auth"] == flags["peer-client-cert-auth"] == "true"
    for name in ("cert-file", "key-file", "trusted-ca-file", "peer-cert-file", "peer-key-file"):
        assert flags[name].startswith("/etc/etcd/tls/")
    # Only health and metrics are plaintext, on a port of their own.
    assert flags["listen-metrics-urls"] == "http://0.0.0.0:2381"
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"


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
