"""docs/cli.md's command reference is what the CLI says (like proto-check for the generated code):
this fails when a command or an option changed and ``make docs`` was not run."""

from __future__ import annotations

import importlib

import typer

from overland.cli.groups import GROUPS
from tools import cli_docs


def test_the_committed_reference_is_the_cli_s() -> None:
    current = cli_docs.DOC.read_text()
    assert cli_docs.render(current) == current, "docs/cli.md is stale: run 'make docs' and commit it"


def test_the_reference_names_every_command_of_every_group() -> None:
    reference = cli_docs.reference()
    for name, group in GROUPS.items():
        command = typer.main.get_command(importlib.import_module(group.module).app)
        assert isinstance(command, typer.core.TyperGroup)
        context = type(command).context_class(command, info_name=name)
        for sub_name in command.list_commands(context):
            assert f"### `overland {name} {sub_name}" in reference, f"{name} {sub_name}"
    for once_missing in (
        "replicate-now",
        "disable",
        "import",
        "set",
        "test-connection",
        "export-recovery-point",
    ):
        assert f"### `overland replica {once_missing}`" in reference


def test_render_replaces_only_its_own_part() -> None:
    document = f"# Title\n\nprose\n\n{cli_docs.BEGIN}\nstale-reference\n{cli_docs.END}\n\nmore prose\n"
    rendered = cli_docs.render(document)
    assert rendered.startswith("# Title\n\nprose\n\n")
    assert rendered.endswith(f"{cli_docs.END}\n\nmore prose\n")
    assert "stale-reference" not in rendered
    assert cli_docs.render(rendered) == rendered
    assert cli_docs.render("# Title\n").endswith(cli_docs.END + "\n")
