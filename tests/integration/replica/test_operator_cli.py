"""The operator's tools, as a user runs them: real ``overland`` processes against real sites (a DR site
process, primaries in-process), real VHDs made by qemu-img. test-connection and what enable refuses,
set (settings and a move to another DR site), export-recovery-point (qemu-img compares the file with
the disk at the point), replicate-now --wait's progress and status --watch --json's lines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.replica.conftest import (
    MiB,
    ServiceProcess,
    Sites,
    assert_same,
    free_port,
    make_disk,
    qemu_compare,
    qemu_io,
    replica_disk,
)

pytestmark = pytest.mark.qemu
OVERLAND = str(Path(sys.executable).parent / "overland")
STATUS_WIDTH = 100


def cli(
    endpoint: str, *args: str, json_output: bool = True, code: int = 0
) -> subprocess.CompletedProcess[str]:
    """``overland [--json] replica --endpoint ENDPOINT ARGS``, which must exit with ``code``."""
    done = subprocess.run(
        [OVERLAND, *(["--json"] if json_output else []), "replica", "--endpoint", endpoint, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == code, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    return done


def data(endpoint: str, *args: str, code: int = 0) -> Any:
    return json.loads(cli(endpoint, *args, code=code).stdout)


def checks(test: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["result"].removeprefix("CHECK_RESULT_"), c["message"]) for c in test["checks"]}


def enable(
    endpoint: str, vm: str, disk: Path, server: str, *extra: str, code: int = 0
) -> subprocess.CompletedProcess[str]:
    return cli(
        endpoint, "enable", "--vm", vm, "--disk", f"d0={disk}", "--replica-server", server, *extra, code=code
    )


def status(endpoint: str, vm: str) -> dict[str, Any]:
    (replication,) = data(endpoint, "status", "--vm", vm)
    return replication


def test_test_connection_and_enable_say_what_is_wrong_check_by_check(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB)
    qemu_io(str(disk), "write -P 0x21 0 3M")
    primary = sites.primary()
    here = f"127.0.0.1:{primary.port}"
    nobody = f"127.0.0.1:{free_port()}"

    tested = data(here, "test-connection", "--replica-server", sites.dr.endpoint)
    assert tested["ok"] is True
    assert all(result == "PASSED" for result, _ in checks(tested).values())
    assert (tested["dr_site_name"], tested["known_as"]) == ("dr", "primary")
    assert isinstance(tested["free_bytes"], int)
    assert tested["free_bytes"] > 0
    # The table, as a person reads it: within 100 columns.
    table = cli(here, "test-connection", "--replica-server", sites.dr.endpoint, json_output=False).stdout
    assert "authorization" in table
    assert "passed" in table
    assert max(len(line) for line in table.splitlines()) <= STATUS_WIDTH

    unreachable = data(here, "test-connection", "--replica-server", nobody, code=7)
    assert checks(unreachable)["reachability"][0] == "FAILED"
    assert "cannot connect" in checks(unreachable)["reachability"][1]
    assert {checks(unreachable)[n][0] for n in ("tls", "authorization", "free_space")} == {"SKIPPED"}
    # A site that keeps no replicas (this primary has no allow-list).
    keeps_none = data(here, "test-connection", "--replica-server", here, code=6)
    assert "without an allow-list" in checks(keeps_none)["authorization"][1]
    # A primary the DR site does not allow learns that, and nothing of who is allowed.
    mallory = sites.primary(site_name="mallory", state_dir=sites.base / "mallory-state")
    refused = data(
        f"127.0.0.1:{mallory.port}", "test-connection", "--replica-server", sites.dr.endpoint, code=8
    )
    result, message = checks(refused)["authorization"]
    assert result == "FAILED"
    assert "'mallory'" in message
    assert "'primary'" not in message
    # With a VM: the room its disks need.
    enable(here, "vm1", disk, sites.dr.endpoint)
    roomy = data(here, "test-connection", "--replica-server", sites.dr.endpoint, "--vm", "vm1")
    # The replica is there already: the VM needs (almost) nothing more.
    assert roomy["needed_bytes"] < MiB
    assert "the VM needs about" in checks(roomy)["free_space"][1]

    # enable runs the same checks: an unreachable DR site is refused, naming the check ...
    other = make_disk(sites.base / "d1.vhd", 8 * MiB)
    refused_enable = enable(here, "vm2", other, nobody, code=6)
    assert "reachability" in refused_enable.stderr
    assert "external-media" in refused_enable.stderr
    assert [r["vm"]["name"] for r in data(here, "status")] == ["vm1"]
    # ... unless the first copy goes by external media.
    export = sites.base / "vm2.ovr"
    enable(here, "vm2", other, nobody, "--initial-method", "external-media", "--export-path", str(export))


def test_set_changes_a_running_replication_without_a_resync_and_moves_it(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB, fmt="fixed")
    qemu_io(str(disk), "write -P 0x31 0 2M", fmt="vpc")
    primary = sites.primary()
    here = f"127.0.0.1:{primary.port}"
    enable(here, "vm1", disk, sites.dr.endpoint, "--frequency", "30")
    first = data(here, "replicate-now", "--vm", "vm1", "--wait")
    cli(here, "set", "--vm", "vm1", code=2)
    changed = data(
        here,
        "set",
        "--vm",
        "vm1",
        "--frequency",
        "900",
        "--recovery-points",
        "3",
        "--compression",
        "off",
        "--bandwidth-limit",
        str(64 * MiB),
    )
    settings = changed["settings"]
    assert (settings["frequency_seconds"], settings["additional_recovery_points"]) == (900, 3)
    assert (settings["compression_mode"], settings["bandwidth_limit_bytes_per_second"]) == (
        "COMPRESSION_OFF",
        64 * MiB,
    )
    assert settings["replica_server"] == sites.dr.endpoint
    assert changed["resync_required"] == []
    assert changed["last_sequence"] == first["sequence"]
    # Invalid values are refused, and nothing changes.
    bad = cli(here, "set", "--vm", "vm1", "--frequency", "45", code=3)
    assert "frequency_seconds" in bad.stderr
    assert status(here, "vm1")["settings"]["frequency_seconds"] == 900
    assert primary.manager is not None
    primary.manager.device("vm1", "d0").write(3 * MiB, b"\x32" * MiB)
    after = data(here, "replicate-now", "--vm", "vm1", "--wait")
    assert after["kind"] == "CYCLE_KIND_DELTA"

    # A second DR site, which holds no replica of vm1: a move needs --resync (a new initial copy).
    store2 = sites.base / "dr2-store"
    dr2 = ServiceProcess(
        ["--site-name", "dr2", "--allow", f"primary={store2}", "--state-dir", str(sites.base / "dr2-state")],
        free_port(),
        sites.base / "dr2.log",
    ).start()
    try:
        refused = cli(here, "set", "--vm", "vm1", "--replica-server", dr2.endpoint, code=6)
        assert "holds no replica of VM 'vm1'" in refused.stderr
        assert "--resync" in refused.stderr
        assert status(here, "vm1")["settings"]["replica_server"] == sites.dr.endpoint
        moved = data(here, "set", "--vm", "vm1", "--replica-server", dr2.endpoint, "--resync")
        assert moved["settings"]["replica_server"] == dr2.endpoint
        initial = data(here, "replicate-now", "--vm", "vm1", "--wait")
        assert initial["kind"] == "CYCLE_KIND_INITIAL"
        assert_same(disk, store2 / "vm1" / "disks" / "d0.vhd")

        # Back to the first DR site, which holds vm1 at another sequence: --resync, by hash compare.
        back = data(here, "set", "--vm", "vm1", "--replica-server", sites.dr.endpoint, "--resync")
        assert back["resync_required"] == ["d0"]
        assert data(here, "replicate-now", "--vm", "vm1", "--wait")["kind"] == "CYCLE_KIND_RESYNC"
        assert_same(disk, replica_disk(sites, "vm1", "d0"))

        # A copy of the DR site moved elsewhere (same replica, same sequence): deltas go on there.
        dr2.stop()
        shutil.rmtree(store2 / "vm1")
        sites.dr.stop()
        shutil.copytree(sites.dr_store / "vm1", store2 / "vm1")
        sites.dr.start()
        dr2.start()
        same = data(here, "set", "--vm", "vm1", "--replica-server", dr2.endpoint)
        assert same["resync_required"] == []
        primary.manager.device("vm1", "d0").write(5 * MiB, b"\x33" * MiB)
        assert data(here, "replicate-now", "--vm", "vm1", "--wait")["kind"] == "CYCLE_KIND_DELTA"
        assert_same(disk, store2 / "vm1" / "disks" / "d0.vhd")
    finally:
        dr2.stop()


def export(
    sites: Sites, point: str, to: Path, *, json_output: bool = True, code: int = 0
) -> subprocess.CompletedProcess[str]:
    """``export-recovery-point`` of VM vm1's ``point`` to ``to``, at the DR site."""
    args = ("export-recovery-point", "--vm", "vm1", "--point", point, "--to", str(to))
    return cli(sites.dr.endpoint, *args, json_output=json_output, code=code)


def test_export_recovery_point_writes_the_disk_at_the_point(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB)
    qemu_io(str(disk), "write -P 0x41 0 2M")
    primary = sites.primary()
    here = f"127.0.0.1:{primary.port}"
    enable(here, "vm1", disk, sites.dr.endpoint, "--recovery-points", "1")
    data(here, "replicate-now", "--vm", "vm1", "--wait")
    assert primary.manager is not None
    device = primary.manager.device("vm1", "d0")
    device.write(MiB, b"\x42" * (2 * MiB))
    at_point = data(here, "replicate-now", "--vm", "vm1", "--wait")["sequence"]
    copy = sites.base / "at-point.vhd"
    shutil.copyfile(disk, copy)
    device.write(0, b"\x43" * (4 * MiB))
    latest = data(here, "replicate-now", "--vm", "vm1", "--wait")["sequence"]
    points = [p["sequence"] for p in data(here, "recovery-points", "--vm", "vm1")]
    assert at_point in points
    assert latest in points

    exported = sites.base / "exported.vhd"
    point = f"vm1@{at_point}"
    written = json.loads(export(sites, point, exported).stdout)
    assert (written["disk"], written["sequence"], written["path"]) == ("d0", at_point, str(exported))
    assert written["file_bytes"] == exported.stat().st_size
    # A VHD qemu-img opens, equal to the disk at the point's cut.
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(exported)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(info.stdout)["format"] == "vpc"
    assert_same(copy, exported)
    assert qemu_compare(disk, exported).returncode != 0
    # The latest point, by sequence, with the progress bar (text output).
    newest = sites.base / "newest.vhd"
    shown = export(sites, str(latest), newest, json_output=False)
    assert "d0" in shown.stdout
    assert_same(disk, newest)
    # What is not there, and a file that is.
    export(sites, "vm1@999", sites.base / "x.vhd", code=4)
    export(sites, point, exported, code=2)
    assert not (sites.base / "x.vhd").exists()
    assert not (sites.base / "x.vhd.part").exists()


def test_progress_of_a_cycle_as_json_lines_and_as_a_bar(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 32 * MiB, fmt="fixed")
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={disk}", "bs=1M", "count=24", "conv=notrunc", "status=none"],
        check=True,
        timeout=60,
    )
    primary = sites.primary()
    here = f"127.0.0.1:{primary.port}"
    # 4 MiB/s of incompressible data: the initial copy takes seconds, long enough to be watched.
    enable(here, "vm1", disk, sites.dr.endpoint, "--bandwidth-limit", str(4 * MiB), "--no-compression")
    watch = subprocess.Popen(
        [OVERLAND, "--json", "replica", "--endpoint", here, "status", "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []
    try:
        assert watch.stdout is not None
        for line in watch.stdout:
            lines.append(json.loads(line))
            if lines[-1].get("cycle", {}).get("state") == "CYCLE_STATE_SUCCEEDED":
                break
    finally:
        watch.terminate()
        watch.wait(timeout=30)
    cycles = [line["cycle"] for line in lines if line.get("cycle")]
    running = [c for c in cycles if c["state"] == "CYCLE_STATE_RUNNING" and c["total_bytes"]]
    assert running, lines[-3:]
    assert {c["kind"] for c in running} == {"CYCLE_KIND_INITIAL"}
    # Numbers are numbers, and the bytes sent only grow.
    sent = [c["transferred_bytes"] for c in running]
    assert all(isinstance(n, int) for n in sent)
    assert sent == sorted(sent)
    assert cycles[-1]["transferred_bytes"] == cycles[-1]["total_bytes"] >= 24 * MiB

    # A delta, waited for with a progress bar: the final line says what it did.
    assert primary.manager is not None
    primary.manager.device("vm1", "d0").write(0, b"\x52" * (8 * MiB))
    waited = cli(here, "replicate-now", "--vm", "vm1", "--wait", json_output=False).stdout
    assert "vm1: cycle" in waited
    assert "delta, 8 MiB in" in waited
    # status: a table within 100 columns, ages as people read them.
    table = cli(here, "status", json_output=False).stdout
    assert max(len(line) for line in table.splitlines()) <= STATUS_WIDTH
    # Ages as people read them ("just now", "12 s ago"), never nanoseconds.
    assert re.search(r"just now|\d+ (s|min|h|d) ago", table), table
    assert "met" in table
