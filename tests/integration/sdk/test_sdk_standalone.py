"""The SDK installs on its own: in a plain venv (no system site packages), ``pip install ./sdk`` brings
grpcio and protobuf (and what they need) and nothing else, and its client makes real calls against the
policy service, rich error details included; the ``overland`` command then says how to get the CLI.
``pip install './sdk[cli]'`` adds the CLI, which works against the same service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.sdk.conftest import RealPolicy

SDK = Path(__file__).resolve().parents[3] / "sdk"
# What a venv holds before anything is installed into it.
VENV_TOOLS = {"pip", "setuptools", "wheel"}

# Every installed distribution and the names of what it requires, as the venv's own metadata says.
INSTALLED = """
import importlib.metadata as metadata, json, re
def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()
print(json.dumps({
    canonical(dist.metadata["Name"]): [
        canonical(re.split(r"[ ;<>=!~\\[(]", requirement, maxsplit=1)[0])
        for requirement in dist.requires or () if "extra ==" not in requirement
    ]
    for dist in metadata.distributions()
}))
"""

# A call that works, and one that fails with field violations (decoded by the SDK's own reader).
CALLS = """
import json, sys
import overland
with overland.PolicyClient(sys.argv[1]) as policy:
    domain = policy.create_routing_domain(tenant_name="standalone")
    listed = [d.tenant_name for d in policy.list_routing_domains()]
    try:
        policy.create_virtual_subnet(vsid=1, rdid=domain.rdid, ca_prefixes=["192.0.2.0/24"])
        violations = None
    except overland.InvalidArgumentError as error:
        violations = [v.field for v in error.field_violations]
print(json.dumps({"listed": listed, "violations": violations, "cli_loaded": "typer" in sys.modules}))
"""


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # Run outside the repository, so that "import services" cannot find the services by accident.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAND_")}
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=environ
    )


def pip_install(venv: Path, requirement: str, cwd: Path) -> None:
    installed = run(
        str(venv / "bin" / "pip"),
        "install",
        "--disable-pip-version-check",
        "-q",
        requirement,
        cwd=cwd,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]


def closure(requires: dict[str, list[str]], roots: set[str]) -> set[str]:
    found, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(requires.get(name, ()))
    return found


def test_the_bare_sdk_needs_only_grpcio_and_protobuf_and_the_cli_is_an_extra(
    tmp_path: Path, real_policy: RealPolicy
) -> None:
    venv = tmp_path / "venv"
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    created = run(str(base_python), "-m", "venv", str(venv), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    python, overland = str(venv / "bin" / "python"), str(venv / "bin" / "overland")
    pip_install(venv, str(SDK), tmp_path)

    requires = json.loads(run(python, "-c", INSTALLED, cwd=tmp_path).stdout)
    assert requires["overland-sdk"] == ["grpcio", "protobuf"]
    assert set(requires) - VENV_TOOLS == closure(requires, {"overland-sdk"})

    called = run(python, "-c", CALLS, real_policy.address, cwd=tmp_path)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {
        "listed": ["standalone"],
        "violations": ["virtual_subnet.vsid"],
        "cli_loaded": False,
    }
    assert run(python, "-c", "import services", cwd=tmp_path).returncode != 0

    without_extra = run(overland, "--help", cwd=tmp_path)
    assert without_extra.returncode == 2
    assert without_extra.stdout == ""
    assert without_extra.stderr.count("\n") == 1
    assert "pip install 'overland-sdk[cli]'" in without_extra.stderr

    pip_install(venv, f"{SDK}[cli]", tmp_path)
    helped = run(overland, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "policy" in helped.stdout
    assert "replica" in helped.stdout
    listed = run(
        overland,
        "--json",
        "policy",
        "--endpoint",
        real_policy.address,
        "routing-domain",
        "list",
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stderr
    assert [d["tenant_name"] for d in json.loads(listed.stdout)] == ["standalone"]
