"""``overland replica ...`` end to end: the CLI against a primary and a DR process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.replica.conftest import MiB, Sites, make_disk, qemu_io

pytestmark = pytest.mark.qemu
OVERLAND = str(Path(sys.executable).parent / "overland")


def overland(endpoint: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [OVERLAND, "--json", "replica", "--endpoint", endpoint, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_cli_enable_status_pause_resume_resync_points(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB)
    qemu_io(str(disk), "write -P 0x44 0 2M")
    primary = sites.primary()
    endpoint = f"127.0.0.1:{primary.port}"
    bad = overland(
        endpoint, "enable", "--vm", "vm1", "--disk", f"d0={disk}", "--replica-server", "x", check=False
    )
    assert bad.returncode == 3
    assert "settings.replica_server" in bad.stderr
    enabled = json.loads(
        overland(
            endpoint,
            "enable",
            "--vm",
            "vm1",
            "--disk",
            f"d0={disk}",
            "--replica-server",
            sites.dr.endpoint,
            "--frequency",
            "30",
            "--recovery-points",
            "2",
        ).stdout
    )
    assert enabled["vm"]["name"] == "vm1"
    # Queued at once; --wait follows it to the end.
    queued = json.loads(overland(endpoint, "replicate-now", "--vm", "vm1").stdout)
    assert queued["vm_name"] == "vm1"
    assert queued["id"] >= 1
    waited = json.loads(overland(endpoint, "replicate-now", "--vm", "vm1", "--wait").stdout)
    assert waited["state"] == "CYCLE_STATE_SUCCEEDED"
    assert waited["id"] >= queued["id"]
    status = json.loads(overland(endpoint, "status", "--vm", "vm1").stdout)
    assert status[0]["state"] == "REPLICATION_STATE_REPLICATING"
    paused = json.loads(overland(endpoint, "pause", "--vm", "vm1").stdout)
    assert paused["state"] == "REPLICATION_STATE_SUSPENDED"
    again = overland(endpoint, "pause", "--vm", "vm1", check=False)
    assert again.returncode == 6
    resumed = json.loads(overland(endpoint, "resume", "--vm", "vm1").stdout)
    assert resumed["state"] == "REPLICATION_STATE_REPLICATING"
    overland(endpoint, "resync", "--vm", "vm1")
    overland(endpoint, "replicate-now", "--vm", "vm1", "--wait")
    synced = json.loads(overland(endpoint, "status", "--vm", "vm1").stdout)[0]
    # The scheduler also ran cycles (after resume and resync), so only the order is certain.
    last = synced["last_sequence"]
    assert last >= 3
    assert not synced["resync_required"]
    points = json.loads(overland(endpoint, "recovery-points", "--vm", "vm1").stdout)
    assert points[0]["sequence"] == last
    assert 2 <= len(points) <= 3
    watched = subprocess.run(
        [
            OVERLAND,
            "replica",
            "--endpoint",
            endpoint,
            "status",
            "--watch",
            "--interval",
            "0.1",
            "--count",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert watched.returncode == 0, watched.stderr
    assert "vm1" in watched.stdout
    assert "replicating" in watched.stdout
    missing = overland(endpoint, "status", "--vm", "nope", check=False)
    assert missing.returncode == 4
