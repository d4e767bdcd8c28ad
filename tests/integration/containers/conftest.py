"""Fixtures of the container suite: the Docker engine, the images, a private network, the etcd cluster.

The engine is started by ``tools/docker.sh`` and the images built by ``tools/build_images.py`` (both
idempotent and cached), exactly as ``make docker-up images`` does, so the suite needs nothing prepared.
Every test here is marked ``docker``; a timing summary per scenario is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# testcontainers reads its settings when first imported: no reaper container (it would need a registry
# pull), and published ports reached on loopback.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
os.environ["TESTCONTAINERS_HOST_OVERRIDE"] = "127.0.0.1"

import docker
from testcontainers.core.network import Network

from tests.integration.containers.harness import LABEL, REPO, EtcdCluster, Timings
from tests.integration.containers.security import SuiteSecurity
from tests.integration.containers.stack import AGENT_HOSTS, OverlandStack

ENGINE_TIMEOUT_SECONDS = 180
IMAGES_TIMEOUT_SECONDS = 900
TIMINGS_KEY = pytest.StashKey[Timings]()
SUITE_START_KEY = pytest.StashKey[float]()


# A test's own waits are bounded; this only has to cover a cold image build in the first test's setup.
TEST_TIMEOUT_SECONDS = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_SECONDS))


def remove_orphans(client: docker.DockerClient) -> None:
    """Remove what earlier runs that died left behind (there is no reaper container): every container
    and network labelled by a test run whose process is gone."""

    def orphaned(labels: dict[str, str] | None) -> bool:
        owner = (labels or {}).get(LABEL, "")
        pid = owner.removeprefix("ovl").partition("-")[0]
        if not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        return False

    for container in client.containers.list(all=True, filters={"label": LABEL}):
        if orphaned(container.labels):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": LABEL}):
        if orphaned(network.attrs.get("Labels")):
            network.remove()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TIMINGS_KEY] = Timings()
    config.stash[SUITE_START_KEY] = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    timings = config.stash.get(TIMINGS_KEY, None)
    if not timings or not timings.rows:
        return
    terminalreporter.section("container suite timings")
    for line in timings.render():
        terminalreporter.write_line(line)
    total = time.monotonic() - config.stash[SUITE_START_KEY]
    terminalreporter.write_line(f"whole run (including image builds): {total:.1f} s")


@pytest.fixture(scope="session")
def timings(pytestconfig: pytest.Config) -> Timings:
    return pytestconfig.stash[TIMINGS_KEY]


@pytest.fixture(scope="session")
def docker_engine(timings: Timings) -> Iterator[docker.DockerClient]:
    """A running local engine (started by tools/docker.sh when none answers)."""
    with timings.measure("setup", "docker engine up"):
        subprocess.run([str(REPO / "tools" / "docker.sh")], check=True, timeout=ENGINE_TIMEOUT_SECONDS)
    client = docker.from_env(timeout=120)
    remove_orphans(client)
    try:
        yield client
    finally:
        client.close()


def build_images(names: list[str], timings: Timings) -> dict[str, str]:
    """Build (or find cached) the named images with tools/build_images.py; their tags by name."""
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_images.py"), "--json", *names],
        check=True,
        capture_output=True,
        text=True,
        timeout=IMAGES_TIMEOUT_SECONDS,
    )
    report = json.loads(done.stdout)
    for name, seconds in report["seconds"].items():
        if name != "total":
            timings.add("setup", f"image {name} ({'cached' if report['cached'][name] else 'built'})", seconds)
    images: dict[str, str] = report["images"]
    return images


@pytest.fixture(scope="session")
def etcd_image(docker_engine: docker.DockerClient, timings: Timings) -> str:
    return build_images(["etcd"], timings)["etcd"]


@pytest.fixture(scope="session")
def overland_image(docker_engine: docker.DockerClient, timings: Timings) -> str:
    """The one Overland image (on the debootstrap base); rebuilt only when its inputs changed.

    ``OVERLAND_TEST_IMAGE`` names an existing image to test instead (for example a released one)."""
    given = os.environ.get("OVERLAND_TEST_IMAGE")
    if given:
        docker_engine.images.get(given)
        return given
    return build_images(["overland"], timings)["overland"]


@pytest.fixture
def test_prefix(request: pytest.FixtureRequest) -> str:
    """A name prefix unique to this run and test, for containers and networks."""
    return f"ovl{os.getpid()}-{request.node.name.removeprefix('test_').replace('_', '-')[:30]}"


@pytest.fixture
def network(docker_engine: docker.DockerClient, test_prefix: str) -> Iterator[Network]:
    """A private bridge network (its subnet comes from the engine's 198.19.0.0/16 pool)."""
    net = Network(docker_network_kw={"labels": {LABEL: test_prefix}}).create()
    try:
        yield net
    finally:
        for container in docker_engine.containers.list(all=True, filters={"label": f"{LABEL}={test_prefix}"}):
            container.remove(force=True, v=True)
        net.remove()


@pytest.fixture(scope="session")
def security(tmp_path_factory: pytest.TempPathFactory) -> SuiteSecurity:
    """The suite's certificates and etcd passwords, in a directory every container mounts."""
    return SuiteSecurity.create(tmp_path_factory.mktemp("security"), AGENT_HOSTS)


@pytest.fixture
def etcd_cluster(
    etcd_image: str, network: Network, test_prefix: str, security: SuiteSecurity
) -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster for one test (TLS, users), removed afterwards."""
    cluster = EtcdCluster(network, etcd_image, test_prefix, security)
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def overland_stack(
    etcd_cluster: EtcdCluster, overland_image: str, test_prefix: str
) -> Iterator[OverlandStack]:
    """The policy service and two table-only agents on ``etcd_cluster``, removed afterwards."""
    stack = OverlandStack(etcd_cluster, overland_image, test_prefix)
    try:
        yield stack.start()
    finally:
        stack.close()
