"""The locally built images: what they contain, how they start, that the cache holds, and that Docker
keeps to its address range."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import docker
import pytest
from testcontainers.core.network import Network

from tests.integration.containers.harness import REPO

DOCKER_RANGE = ipaddress.IPv4Network("198.19.0.0/16")
INPUTS_LABEL = "org.overland.inputs"


def run_image(engine: docker.DockerClient, image: str, *args: str, entrypoint: str | None = None) -> str:
    """Run a throwaway container to completion and return its output; it is always removed.

    Raises ``docker.errors.ContainerError`` on a non-zero exit, ``docker.errors.APIError`` when it
    cannot start."""
    container = engine.containers.create(image, list(args), entrypoint=entrypoint, network_mode="none")
    try:
        container.start()
        status = container.wait(timeout=120)["StatusCode"]
        output: bytes = container.logs()
        if status != 0:
            raise docker.errors.ContainerError(container, status, args, image, output)
        return output.decode()
    finally:
        container.remove(force=True)


def test_etcd_image_runs_the_static_binary_and_nothing_else(
    docker_engine: docker.DockerClient, etcd_image: str
) -> None:
    assert "etcd Version: 3.5.1" in run_image(docker_engine, etcd_image, "--version")
    assert "etcdctl version: 3.5.1" in run_image(
        docker_engine, etcd_image, "version", entrypoint="/usr/local/bin/etcdctl"
    )
    # Imported from a tarball of two static binaries: there is no shell or libc to fall back on.
    with pytest.raises(docker.errors.APIError):
        run_image(docker_engine, etcd_image, "-c", "true", entrypoint="/bin/sh")
    assert docker_engine.images.get(etcd_image).labels[INPUTS_LABEL]


def test_overland_image_dispatches_to_every_service(
    docker_engine: docker.DockerClient, overland_image: str
) -> None:
    usage = run_image(docker_engine, overland_image)
    assert "overland-service {policy,vswitch,replica}" in usage
    with pytest.raises(docker.errors.ContainerError) as unknown:
        run_image(docker_engine, overland_image, "nonsense")
    assert unknown.value.exit_status == 2
    imports = run_image(
        docker_engine,
        overland_image,
        "-c",
        # The etcd-auth Job and the exec health probes of deploy/k8s run these modules.
        "import services.common.server, services.common.etcd_auth, services.common.health_probe;"
        "import overland.v1.policy_pb2_grpc, etcd3, grpc; import os;"
        "print(os.path.exists('/tmp/wheelhouse'))",
        entrypoint="/opt/overland/bin/python",
    )
    # The wheelhouse was only in the install stage; the final image has the virtualenv alone.
    assert imports.strip() == "False"
    assert docker_engine.images.get(overland_image).labels[INPUTS_LABEL]


def test_overland_image_has_the_tools_the_services_run(
    docker_engine: docker.DockerClient, overland_image: str
) -> None:
    # The vswitch datapath finds its PA's MTU with `ip -o -4 addr show` (and makes its TAP ports with
    # `ip`); a DR site exports a recovery point with `cp --reflink=auto --sparse=always`.
    addresses = run_image(docker_engine, overland_image, "-c", "ip -o -4 addr show", entrypoint="/bin/sh")
    assert "127.0.0.1/8" in addresses
    copy = "cp --reflink=auto --sparse=always /etc/hostname /tmp/copy && cat /tmp/copy"
    assert run_image(docker_engine, overland_image, "-c", copy, entrypoint="/bin/sh").strip()


def test_unchanged_inputs_are_a_cache_hit(etcd_image: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_images.py"), "--json", "etcd"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    assert report["images"]["etcd"] == etcd_image
    assert report["cached"]["etcd"] is True


def test_docker_networks_stay_in_their_range(docker_engine: docker.DockerClient) -> None:
    bridge = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"]
    assert bridge
    assert all(ipaddress.IPv4Network(c["Subnet"]).subnet_of(DOCKER_RANGE) for c in bridge)
    with Network() as net:
        config = docker_engine.networks.get(net.name).attrs["IPAM"]["Config"]
    assert config
    assert all(ipaddress.IPv4Network(c["Subnet"]).subnet_of(DOCKER_RANGE) for c in config)
