"""A DR site without TLS believes the ``x-overland-primary`` header of loopback callers only: a caller on
another host (a host namespace reaching the site on its PA) that names an allowed primary is refused,
unless the site says ``--insecure-primary-header``. The site is a real process listening beyond
loopback in plaintext, which it does only with ``--insecure-listen``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.replica.config import PRIMARY_HEADER
from services.vswitch.lab import Host, Lab, TcpRelay
from services.vswitch.netns import exec_argv
from tests.integration.replica.conftest import REPO, START_SECONDS

pytestmark = pytest.mark.netns

DR_PA, PRIMARY_PA = "198.18.0.1", "198.18.0.2"
DR_PORT = 50053


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    lab = Lab()
    try:
        yield lab.add_host("dr", DR_PA), lab.add_host("primary", PRIMARY_PA)
    finally:
        lab.close()


def start_dr(host: Host, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The DR site in ``host``'s namespace on 0.0.0.0, allowing "primary"; returns once it listens."""
    argv = [
        *(sys.executable, "-m", "services.replica", "--site-name", "dr"),
        *("--allow", f"primary={tmp_path / 'store'}", "--state-dir", str(tmp_path / "state")),
        *("--bind", f"0.0.0.0:{DR_PORT}", "--insecure-listen", *extra),
    ]
    with (tmp_path / "dr.log").open("ab") as log:
        process = subprocess.Popen(exec_argv(host.netns, argv), cwd=REPO, stdout=subprocess.PIPE, stderr=log)
    assert process.stdout is not None
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(b"LISTENING") or not line:
            break
    if process.poll() is not None:
        raise AssertionError(f"the DR site exited: {(tmp_path / 'dr.log').read_text()[-2000:]}")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def send_as_primary(relay: TcpRelay, vm: str) -> replica_pb2.DeltaAck:
    """A whole (empty) first delta of ``vm``, naming itself "primary" by the header."""
    messages = [
        replica_pb2.DeltaMessage(
            header=replica_pb2.DeltaHeader(vm_name=vm, sequence=1, disk_sizes={"d0": 1 << 20}, full=True)
        ),
        replica_pb2.DeltaMessage(end_of_delta=0),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        stub = replica_pb2_grpc.ReplicaReceiverServiceStub(channel)
        return stub.SendDelta(iter(messages), timeout=20, metadata=((PRIMARY_HEADER, "primary"),))


@pytest.mark.parametrize("trust_anyone", [False, True])
def test_a_primary_beyond_loopback_cannot_pose_by_header(
    hosts: tuple[Host, Host], tmp_path: Path, trust_anyone: bool
) -> None:
    dr, primary = hosts
    site = start_dr(dr, tmp_path, *(["--insecure-primary-header"] if trust_anyone else []))
    # From the primary's namespace to the DR's PA: the site sees 198.18.0.2 calling.
    remote = TcpRelay(None, 0, primary.netns, (DR_PA, DR_PORT))
    # From the DR's own loopback: the site sees 127.0.0.1 calling.
    local = TcpRelay(None, 0, dr.netns, ("127.0.0.1", DR_PORT))
    try:
        assert send_as_primary(local, "vm-local").sequence == 1
        if trust_anyone:
            assert send_as_primary(remote, "vm-remote").sequence == 1
        else:
            with pytest.raises(grpc.RpcError) as refused:
                send_as_primary(remote, "vm-remote")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            details = refused.value.details() or ""
            assert PRIMARY_PA in details
            assert "--insecure-primary-header" in details
            assert not (tmp_path / "store" / "vm-remote").exists()
    finally:
        remote.close()
        local.close()
        stop(site)
