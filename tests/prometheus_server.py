"""A real Prometheus server for tests (``/usr/bin/prometheus`` of the Debian package ``prometheus``,
which ``make`` installs): started on a free loopback port with a config scraping the given targets
every second and its storage in a temporary directory, queried through its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

Sample = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrometheusServer:
    """``targets``: job name -> the host:port addresses it scrapes (plain HTTP, ``/metrics``)."""

    def __init__(self, directory: Path, targets: Mapping[str, Sequence[str]]):
        self.directory = directory
        self.targets = targets
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = directory / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        assert Path(binary).exists(), "prometheus is missing: `make deps-apt` installs the Debian package"
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                for job, addresses in self.targets.items()
            ],
        }
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = _free_port()
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    # A fresh series is found at once: no 5-minute lookback needed for these tests.
                    "--query.lookback-delta=30s",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._poll(lambda: self._get("/-/ready") is not None, timeout, "prometheus to be ready")
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def query(self, expr: str) -> list[Sample]:
        """The instant vector of ``expr`` now: ``[{"metric": {labels}, "value": [time, "text"]}]``."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert body is not None, f"prometheus did not answer the query {expr!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[Sample] = answer["data"]["result"]
        return result

    def wait_for(
        self, expr: str, done: Callable[[list[Sample]], bool], timeout: float = 120.0
    ) -> list[Sample]:
        """Poll ``expr`` until ``done`` says yes about its result (then return it)."""
        found: list[Sample] = []

        def check() -> bool:
            nonlocal found
            found = self.query(expr)
            return done(found)

        self._poll(check, timeout, f"{expr!r} to satisfy the test (last result: {{last}})", lambda: found)
        return found

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                text: str = response.read().decode()
                return text
        except OSError:
            return None

    def _poll(
        self,
        check: Callable[[], bool],
        timeout: float,
        what: str,
        last: Callable[[], object] = lambda: None,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self._process is not None
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited {self._process.returncode}: {self._tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what.format(last=last())}; log: {self._tail()}")
            time.sleep(0.5)

    def _tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def value(sample: Sample) -> float:
    return float(sample["value"][1])
