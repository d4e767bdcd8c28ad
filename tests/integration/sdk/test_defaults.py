"""The services on their defaults and the CLI on its defaults find each other: each service is started as
``python -m services.<name>`` with no bind flag, and ``overland ... --json`` reaches it with no endpoint
flag and no endpoint variable (both take their addresses from ``overland.defaults``). Each then stops
cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.etcd_auth import POLICY_USER, host_user
from services.common.etcd_process import EtcdProcess

pytestmark = pytest.mark.etcd

OVERLAND = Path(sys.executable).with_name("overland")
START_SECONDS = 60.0


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any OVERLAND_* or OTEL_* setting, so that only defaults apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERLAND_", "OTEL_"))}
    return {**env, **extra}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OVERLAND), "--json", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def reach(service: Started, *args: str, until: Callable[[Any], bool] = lambda _answer: True) -> Any:
    """``overland --json ARGS`` once the service answers (and the answer passes ``until``); the service
    must not exit meanwhile."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        result = cli(*args)
        if result.returncode == 0 and until(answer := json.loads(result.stdout)):
            return answer
        assert service.process.poll() is None, f"{service.name} exited: {service.log_text()}"
        assert time.monotonic() < deadline, (
            f"{service.name} unreachable: {result.stderr}\n{service.log_text()}"
        )
        time.sleep(0.3)


@pytest.fixture
def services(etcd_server: EtcdProcess, tmp_path: Path) -> Iterator[dict[str, Started]]:
    env = clean_env(PYTHONUNBUFFERED="1")
    commands = {
        "policy": [],
        "vswitch": ["--host-name", "defaults-host", "--pa-ip", "198.18.0.1", "--table-only"],
        "replica": ["--state-dir", str(tmp_path / "replica-state")],
    }
    # Each service is its own etcd user, told by the environment (the etcd is not on its default port).
    etcd_env = {
        "policy": etcd_server.environment(POLICY_USER),
        "vswitch": etcd_server.environment(host_user("defaults-host")),
        "replica": {},
    }
    started: dict[str, Started] = {}
    try:
        for name, argv in commands.items():
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}", *argv],
                    env=env | etcd_env[name],
                    stdout=out,
                    stderr=out,
                )
            started[name] = Started(name, process, log)
        yield started
    finally:
        for service in started.values():
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait(10)


def test_each_service_on_its_defaults_is_reached_by_the_cli_on_its_defaults(
    services: dict[str, Started],
) -> None:
    status = reach(services["policy"], "policy", "status")
    assert isinstance(status, dict)
    assert int(status["revision"]) >= 1

    agent = reach(services["vswitch"], "vswitch", "status")
    assert isinstance(agent, dict)
    assert (agent["host_name"], agent["pa_ip"]) == ("defaults-host", "198.18.0.1")

    replications = reach(services["replica"], "replica", "status")
    assert replications == []

    # The agent registered its host through the same etcd (the default's variable) the policy reads.
    registered = reach(services["policy"], "policy", "status", until=lambda answer: bool(answer.get("hosts")))
    assert [host["host_name"] for host in registered["hosts"]] == ["defaults-host"]

    for service in services.values():
        service.process.send_signal(signal.SIGTERM)
    for service in services.values():
        assert service.process.wait(60) == 0, service.log_text()
