"""``import overland`` is cheap: its public names load on first use, and the names type checkers see
(the ``TYPE_CHECKING`` imports) are exactly the ones that load. The ``overland`` command loads a group
only when it runs, rich only for a table, and never pydantic (typer from 0.29 coerces through it)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import overland
import overland.cli
from overland.cli.groups import GROUPS

HEAVY = ("grpc", "google.protobuf", "typer", "click", "rich", "pydantic")
GROUP_MODULES = tuple(group.module for group in GROUPS.values())


def loaded_after(statement: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after ``statement``."""
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.split()


def loaded_by_cli(*args: str) -> list[str]:
    """The heavy modules and the CLI's group modules loaded by ``overland ARGS`` (its output dropped)."""
    statement = (
        "import contextlib, io\nfrom overland.cli import app\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    app({list(args)!r}, prog_name='overland', standalone_mode=False)"
    )
    return loaded_after(statement, HEAVY + GROUP_MODULES)


def test_import_overland_loads_no_grpc_protobuf_or_cli_framework() -> None:
    assert loaded_after("import overland, overland.cli") == []


def test_a_client_loads_grpc_but_no_cli_framework() -> None:
    assert loaded_after("from overland import PolicyClient") == ["grpc", "google.protobuf"]


def test_overland_help_lists_the_groups_without_loading_them() -> None:
    assert loaded_by_cli("--help") == ["typer"]


def test_a_group_loads_alone_and_its_help_needs_no_rich() -> None:
    assert loaded_by_cli("vswitch", "--help") == ["grpc", "google.protobuf", "typer", "overland.cli.vswitch"]


def test_rich_loads_for_a_table_and_not_for_json(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    spans.write_text("")
    listing = ("trace", "list", "--file", str(spans))
    trace = ["grpc", "google.protobuf", "typer", "overland.cli.trace"]
    assert loaded_by_cli("--json", *listing) == trace
    assert loaded_by_cli(*listing) == [*trace[:3], "rich", trace[3]]


def _type_checking_imports(module: ModuleType) -> dict[str, str]:
    """name -> module of every ``from M import N as N`` under ``if TYPE_CHECKING:``."""
    tree = ast.parse(Path(str(module.__file__)).read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                for alias in statement.names:
                    assert alias.asname == alias.name, "re-export with 'import N as N'"
                    found[alias.name] = str(statement.module)
    return found


@pytest.mark.parametrize("package", [overland, overland.cli], ids=["overland", "overland.cli"])
def test_the_lazy_names_are_the_type_checked_ones_and_all_load(package: ModuleType) -> None:
    lazy = {name: home for home, names in package.PUBLIC_NAMES.items() for name in names}
    assert lazy == _type_checking_imports(package)
    assert set(lazy) <= set(package.__all__)
    for name, home in lazy.items():
        assert getattr(package, name) is getattr(importlib.import_module(home), name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchClient'"):
        _ = overland.NoSuchClient
