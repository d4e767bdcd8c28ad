"""Hyper-V Replica in containers: a primary and a DR site from the Overland image on a private network.
The DR container is killed in the middle of a delta; the last recovery point survives intact, and
after a restart the cycle completes and the replica equals the primary disk (qemu-img compare).

The disks and the DR store are directories shared with the host at the same path, so qemu-img and
qemu-io on the host check and write the very files the services use.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from testcontainers.core.network import Network

from overland import defaults
from overland.v1 import replica_pb2, replica_pb2_grpc
from tests.integration.containers.harness import Timings, wait_until
from tests.integration.containers.security import SuiteSecurity
from tests.integration.containers.stack import ServiceContainer, start_service
from tests.integration.replica.conftest import (
    CycleFailed,
    MiB,
    assert_same,
    enable_request,
    make_disk,
    qemu_io,
    replicate_now,
    state_name,
    throttled,
    wait_for,
)

pytestmark = pytest.mark.qemu

# Each site in its own container, both on the replica service's default port.
PRIMARY_PORT = DR_PORT = defaults.REPLICA.port
NBD_PORT = 10809
CYCLE_TIMEOUT_SECONDS = 180.0


@dataclass
class ReplicaSites:
    """A primary and a DR container sharing ``base`` with the host."""

    base: Path
    primary: ServiceContainer
    dr: ServiceContainer

    @property
    def store(self) -> Path:
        return self.base / "dr-store"

    @property
    def stub(self) -> replica_pb2_grpc.ReplicaServiceStub:
        return replica_pb2_grpc.ReplicaServiceStub(self.primary.channel)

    def replica_disk(self, vm: str, disk: str) -> Path:
        return self.store / vm / "disks" / f"{disk}.vhd"


@pytest.fixture
def replica_sites(
    overland_image: str, network: Network, test_prefix: str, tmp_path: Path, security: SuiteSecurity
) -> Iterator[ReplicaSites]:
    base = tmp_path.resolve()
    # Mutual TLS both ways: the DR site knows its primary by the CN of the primary's client
    # certificate ("primary"), never by a header; the certificate carries the site role, as deployed.
    primary_tls = security.site_client("primary")
    dr = start_service(
        overland_image,
        network,
        test_prefix,
        "dr",
        DR_PORT,
        [
            "replica",
            "--site-name=dr",
            f"--bind=0.0.0.0:{DR_PORT}",
            f"--allow=primary={base / 'dr-store'}",
            f"--state-dir={base / 'dr-state'}",
        ],
        security,
        shared_dirs=[base],
    )
    primary = start_service(
        overland_image,
        network,
        test_prefix,
        "primary",
        PRIMARY_PORT,
        [
            "replica",
            "--site-name=primary",
            f"--bind=0.0.0.0:{PRIMARY_PORT}",
            f"--client-ca={primary_tls.ca}",
            f"--client-cert={primary_tls.cert}",
            f"--client-key={primary_tls.key}",
            # The suite writes to the primary's disk over NBD from the host; NBD has no TLS, so
            # publishing it takes the explicit flag.
            f"--nbd-bind=0.0.0.0:{NBD_PORT}",
            "--insecure-listen",
            f"--state-dir={base / 'primary-state'}",
            "--tick=0.2",
        ],
        security,
        extra_ports=[NBD_PORT],
        shared_dirs=[base],
    )
    sites = ReplicaSites(base, primary, dr)
    try:
        yield sites
    finally:
        primary.close()
        dr.close()


def test_dr_killed_mid_delta_keeps_the_last_point_and_the_cycle_completes(
    replica_sites: ReplicaSites, timings: Timings
) -> None:
    scenario = "replica: DR killed mid delta"
    sites = replica_sites
    disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
    qemu_io(str(disk), "write -P 0x01 0 8M")
    # The DR site is named by its alias on the private network; 3 MiB/s makes an 8 MiB delta take seconds.
    sites.stub.EnableReplication(
        enable_request("vm1", {"d0": disk}, f"dr:{DR_PORT}", **throttled(3 * MiB)),
        timeout=30,
    )
    get = lambda: sites.stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name="vm1"), timeout=30)  # noqa: E731
    with timings.measure(scenario, "initial replication"):
        wait_for(get, lambda r: state_name(r) == "REPLICATING", seconds=CYCLE_TIMEOUT_SECONDS)
    point1 = sites.base / "point1.vhd"
    shutil.copyfile(disk, point1)
    assert_same(point1, sites.replica_disk("vm1", "d0"))
    qemu_io(f"nbd://127.0.0.1:{sites.primary.published[NBD_PORT]}/vm1/d0", "write -P 0x02 0 8M", fmt="raw")

    outcome: list[object] = []

    def cycle() -> None:
        try:
            outcome.append(replicate_now(sites.stub, "vm1"))
        except (grpc.RpcError, CycleFailed) as error:
            outcome.append(error)

    thread = threading.Thread(target=cycle, daemon=True)
    thread.start()
    staged = sites.store / "vm1" / "staging" / "chunks.log"
    wait_until(
        "the DR site to stage part of the delta", lambda: staged.exists() and staged.stat().st_size > MiB, 60
    )
    sites.dr.kill()
    # Killed mid-delta: the replica is still exactly recovery point 1.
    assert_same(point1, sites.replica_disk("vm1", "d0"))

    with timings.measure(scenario, "DR restarted, delta completed"):
        sites.dr.start()
        thread.join(timeout=CYCLE_TIMEOUT_SECONDS)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], replica_pb2.Replication), outcome[0]
    assert outcome[0].last_sequence == 2
    assert_same(disk, sites.replica_disk("vm1", "d0"))
