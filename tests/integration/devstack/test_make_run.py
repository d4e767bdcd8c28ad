"""``make run`` as a person runs it: the devstack entry point the Makefile names, as a subprocess on its
embedded defaults (only its state directory moved to the test's), until its banner says it is ready; then
the ``overland`` CLI (a real subprocess, on its own defaults) reaches what it started: the demo's routing
domains, the replica demo VM with a completed cycle, and every metrics URL the banner prints. Ctrl-C (a
SIGINT to its process group, as a terminal sends it) stops it with exit status 0, leaving no process and
no network namespace behind.

It binds the services' default ports (policy 50051, replica 50053/50063, NBD 10809/10819, metrics
9464/9466/9476; etcd 2379 when free): like tests/integration/sdk/test_defaults.py it relies on pytest
running one test at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from overland import defaults
from services.vswitch.demo import DEMO_RDIDS
from services.vswitch.lab import BLUE, RED
from tests.integration.sdk.test_defaults import clean_env, cli

T = TypeVar("T")

pytestmark = [pytest.mark.etcd, pytest.mark.netns, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
# `make run`'s recipe, with the virtualenv's python as $(BIN)/python.
MAKE_RUN_RECIPE = "$(BIN)/python -m services.devstack"
READY_LINE = "Ctrl-C stops everything."
# Generous bounds that only stop a hang; nothing here asserts how long a step took.
READY_SECONDS = 300.0
ANSWER_SECONDS = 180.0
STOP_SECONDS = 180.0
POLL_SECONDS = 0.5


@dataclass
class Devstack:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")[-6000:]

    def alive(self) -> None:
        assert self.process.poll() is None, f"make run exited ({self.process.returncode}):\n{self.logs()}"


def poll(what: str, devstack: Devstack, attempt: Callable[[], T | None], seconds: float) -> T:
    """``attempt()`` until it returns something truthy; make run must stay up meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        devstack.alive()
        result = attempt()
        if result:
            return result
        assert time.monotonic() < deadline, f"no {what} after {seconds:.0f} s:\n{devstack.logs()}"
        time.sleep(POLL_SECONDS)


def cli_json(*args: str) -> Any:
    """``overland --json ARGS`` with no endpoint flag or variable; None while it fails."""
    done = cli(*args)
    return json.loads(done.stdout) if done.returncode == 0 else None


def scrape(url: str) -> tuple[str] | None:
    """The page at ``url`` (as a 1-tuple: an empty page is an answer too); None while it fails."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return (response.read().decode(),) if response.status == 200 else None
    except OSError:
        return None


def process_stats() -> dict[int, tuple[int, str]]:
    """Every live process (zombies are dead): its parent and its start time (so a reused pid is not
    taken for the same process)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: fields start after the last ')'.
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        found[int(entry.name)] = (int(fields[1]), fields[19])
    return found


def descendants(root: int) -> dict[int, str]:
    """The processes below ``root`` (children in their own sessions too), with their start times."""
    stats = process_stats()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in stats.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(prefix)]


@pytest.fixture
def devstack(tmp_path: Path) -> Iterator[Devstack]:
    stdout, stderr = tmp_path / "make-run.out", tmp_path / "make-run.err"
    env = clean_env(PYTHONUNBUFFERED="1", **{defaults.STATE_DIR_ENV: str(tmp_path / ".overland")})
    with stdout.open("wb") as out, stderr.open("wb") as err:
        # Its own session: the SIGINT below reaches its process group as Ctrl-C in its terminal would.
        process = subprocess.Popen(
            [sys.executable, "-m", "services.devstack"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    started = Devstack(process, stdout, stderr)
    try:
        yield started
    finally:
        if process.poll() is None:
            for pid in descendants(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait(30)


def test_the_makefile_runs_this_entry_point() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    assert recipe.group(1).strip() == MAKE_RUN_RECIPE


def test_make_run_starts_the_demo_the_cli_reaches_and_ctrl_c_stops_it_all(devstack: Devstack) -> None:
    poll("ready banner", devstack, lambda: READY_LINE in devstack.output(), READY_SECONDS)
    banner = devstack.output()

    domains = poll(
        "routing domains", devstack, lambda: cli_json("policy", "routing-domain", "list"), ANSWER_SECONDS
    )
    assert {(d["rdid"], d["tenant_name"]) for d in domains} == {
        (DEMO_RDIDS[BLUE], "blue"),
        (DEMO_RDIDS[RED], "red"),
    }

    def completed_cycle() -> dict[str, Any] | None:
        for replication in cli_json("replica", "status") or []:
            if (
                replication["vm"]["name"] == "demo-vm"
                and replication["cycle"]["state"] == "CYCLE_STATE_SUCCEEDED"
            ):
                return dict(replication)
        return None

    replication = poll("completed cycle of demo-vm", devstack, completed_cycle, ANSWER_SECONDS)
    assert replication["state"] == "REPLICATION_STATE_REPLICATING"
    assert replication["last_sequence"] >= 1

    urls = re.findall(r"http://\S+/metrics", banner)
    assert f"http://{defaults.POLICY.metrics_address}/metrics" in urls
    assert f"http://{defaults.REPLICA.metrics_address}/metrics" in urls
    # A page, empty or not (an idle policy service has recorded nothing yet: docs/telemetry.md).
    pages = {
        url: poll(f"an answer from {url}", devstack, partial(scrape, url), ANSWER_SECONDS)[0] for url in urls
    }
    assert len(pages) == 3, urls
    site_a = pages[f"http://{defaults.REPLICA.metrics_address}/metrics"]
    assert re.search(
        r'^overland_replica_cycle_duration_seconds_count\{.*overland_vm="demo-vm".*\} [1-9]', site_a, re.M
    ), site_a

    # On a root machine with namespaces (as `make test` runs) the vswitch demo runs too.
    prefix = f"ol{devstack.process.pid % 100000}x"
    assert "vswitch demo: skipped" not in banner
    assert namespaces(prefix)
    children = descendants(devstack.process.pid)
    assert children

    os.killpg(devstack.process.pid, signal.SIGINT)
    try:
        status = devstack.process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"make run did not stop within {STOP_SECONDS:.0f} s of Ctrl-C:\n{devstack.logs()}")
    assert status == 0, devstack.logs()
    assert "stopped cleanly" in devstack.logs()
    assert "Traceback" not in devstack.logs(), devstack.logs()

    stats = process_stats()
    left = {pid for pid, started in children.items() if pid in stats and stats[pid][1] == started}
    assert not left, f"processes left behind: {left}"
    assert namespaces(prefix) == []
