"""The root ``overland`` command: its options, its groups (loaded on demand) and its error reporting.

Starting fast is part of the job (``overland --help`` within 0.2 s of a bare interpreter, a list call
within 0.3 s; ``bench/cli_startup.py`` measures both), so this module imports typer and nothing else
heavy: a group's module (and with it grpc, the generated code and rich) loads only when a command of
that group runs, through ``OverlandGroup``. typer is held below 0.29 (``sdk/pyproject.toml``), whose
pydantic validator per parameter alone took longer than the whole budget. Errors are reported in one
place, ``OverlandGroup.invoke``: one line on stderr and an exit code that says what went wrong, never
a traceback.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from overland.cli.exits import EXIT_INTERRUPTED
from overland.cli.groups import GROUPS, new_typer
from overland.cli.params import seconds

if TYPE_CHECKING:
    # typer's own copy of click, whose classes TyperGroup's methods take (types only: nothing loads).
    from typer._click import Command, Context, HelpFormatter


def json_flag_first(args: list[str]) -> list[str]:
    """``--json`` anywhere before ``--`` moves to the front, where the root command reads it, so that
    ``overland policy lookup-record list --json`` works as well as ``overland --json policy ...``."""
    end = args.index("--") if "--" in args else len(args)
    if "--json" not in args[:end]:
        return args
    return ["--json", *(arg for arg in args[:end] if arg != "--json"), *args[end:]]


class OneLineUsageError(UsageError):
    """A usage error shown as one line on stderr (exit 2), naming the command and its --help, instead
    of click's usage block."""

    def show(self, file: Any = None) -> None:
        command = self.ctx.command_path if self.ctx is not None else "overland"
        message = " ".join(self.format_message().split())
        typer.echo(f"overland: usage: {message} (see '{command} --help')", err=True)


class OverlandGroup(TyperGroup):
    """The root command: loads a group when it is named, and maps every ``OverlandError`` to one
    stderr line and its exit code. Its groups are not added to the root ``Typer`` (``add_typer``
    would import them all): ``get_command`` imports the one named and builds its command."""

    def list_commands(self, ctx: Context) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        group = GROUPS.get(cmd_name)
        if group is None:
            return None
        return typer.main.get_command(importlib.import_module(group.module).app)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        """The groups and their help from ``GROUPS``, without importing them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, group.help) for name, group in GROUPS.items()])

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, json_flag_first(args))
        except NoArgsIsHelpError:
            raise
        except UsageError as error:
            raise OneLineUsageError(error.format_message(), error.ctx) from None

    def invoke(self, ctx: Context) -> Any:
        # A command runs: now the rest of the CLI (and grpc) is needed anyway.
        from overland.cli.common import Settings, exit_code_for, report_error  # noqa: PLC0415
        from overland.errors import OverlandError  # noqa: PLC0415

        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as error:
            # A bad option or argument of a command (or a usage error its body raised): one line.
            raise OneLineUsageError(error.format_message(), error.ctx) from None
        except OverlandError as error:
            found = ctx.find_object(Settings)
            report_error(error, json_output=bool(found and found.json_output))
            raise typer.Exit(exit_code_for(error)) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = new_typer(
    "overland",
    "Overland: NVGRE network virtualization and VHD replica, after Windows Server 2012 Hyper-V.\n\n"
    "Endpoints, TLS and the timeout come from options or OVERLAND_* variables.",
    cls=OverlandGroup,
)


@app.callback()
def root(
    ctx: typer.Context,
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of tables.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Deadline per call, seconds (env OVERLAND_TIMEOUT).", parser=seconds)
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA bundle to verify servers (env OVERLAND_TLS_CA).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Client certificate (env OVERLAND_TLS_CERT).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Client key (env OVERLAND_TLS_KEY).")] = None,
) -> None:
    """The root options, kept on the context (``Settings``) for every command."""
    from overland.cli.common import Settings  # noqa: PLC0415 - see OverlandGroup.invoke
    from overland.config import ClientConfig  # noqa: PLC0415
    from overland.defaults import TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV  # noqa: PLC0415

    environ = dict(os.environ)
    for name, value in ((TLS_CA_ENV, tls_ca), (TLS_CERT_ENV, tls_cert), (TLS_KEY_ENV, tls_key)):
        if value is not None:
            environ[name] = str(value)
    ctx.obj = Settings(ClientConfig.from_env(environ, timeout=timeout), json_output=json_output)
