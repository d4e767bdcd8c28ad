"""The SDK's declared dependencies agree with what its generated code checks at import time.

The generated ``_pb2.py`` files refuse to load under a protobuf runtime older than the protoc that made
them, and the ``_pb2_grpc.py`` files likewise for grpcio; a floor below that lets pip install a
combination that fails on ``import overland``. ``make proto`` with a newer grpcio-tools moves these
versions, and this test says which floor to raise.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GENERATED = REPO / "sdk" / "src" / "overland" / "v1"
PROJECTS = (REPO / "sdk" / "pyproject.toml", REPO / "pyproject.toml")


def _floors(pyproject: Path) -> dict[str, tuple[int, ...]]:
    """Each dependency's ``>=`` version, as a tuple of ints."""
    declared = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    floors = {}
    for requirement in declared:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        if found:
            floors[found[1].lower()] = tuple(int(part) for part in found[2].split("."))
    return floors


def _protobuf_needed() -> tuple[int, ...]:
    versions = set()
    for module in GENERATED.glob("*_pb2.py"):
        check = re.search(
            r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
            module.read_text(),
        )
        assert check, f"{module.name} has no runtime version check"
        versions.add(tuple(int(part) for part in check.groups()))
    return max(versions)


def _grpcio_needed() -> tuple[int, ...]:
    versions = set()
    for module in GENERATED.glob("*_pb2_grpc.py"):
        check = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", module.read_text())
        assert check, f"{module.name} has no grpc version check"
        versions.add(tuple(int(part) for part in check[1].split(".")))
    return max(versions)


def test_the_protobuf_floor_is_what_the_generated_code_needs() -> None:
    needed = _protobuf_needed()
    for pyproject in PROJECTS:
        assert _floors(pyproject)["protobuf"] == needed, pyproject


def test_the_grpcio_floor_is_what_the_generated_code_needs() -> None:
    needed = _grpcio_needed()
    for pyproject in PROJECTS:
        assert _floors(pyproject)["grpcio"] == needed, pyproject
