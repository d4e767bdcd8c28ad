"""The ``overland`` command line: ``overland [OPTIONS] policy|vswitch|replica ...``.

Root options (``--json``, ``--timeout``, ``--tls-*``) come before the group; each group takes
``--endpoint``. Exit codes: 0 ok, 1 other error, 2 usage or configuration, 3 invalid argument,
4 not found, 5 already exists, 6 failed precondition or stale revision, 7 unavailable or deadline
exceeded, 8 permission denied or unauthenticated, 130 interrupted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from overland.cli import policy, replica, trace, vswitch
from overland.cli.common import EXIT_CODES, OverlandGroup, Settings, exit_code_for
from overland.config import ClientConfig

app = typer.Typer(
    cls=OverlandGroup,
    name="overland",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Overland: NVGRE network virtualization and VHD replica, after Windows Server 2012 Hyper-V.",
)
app.add_typer(policy.app, name="policy")
app.add_typer(vswitch.app, name="vswitch")
app.add_typer(replica.app, name="replica")
app.add_typer(trace.app, name="trace")


@app.callback()
def root(
    ctx: typer.Context,
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of tables.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Deadline per call, seconds (env OVERLAND_TIMEOUT).")
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA bundle to verify servers (env OVERLAND_TLS_CA).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Client certificate (env OVERLAND_TLS_CERT).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Client key (env OVERLAND_TLS_KEY).")] = None,
) -> None:
    """Endpoints, TLS and the timeout come from options or OVERLAND_* variables."""
    environ = dict(os.environ)
    for name, value in (("CA", tls_ca), ("CERT", tls_cert), ("KEY", tls_key)):
        if value is not None:
            environ[f"OVERLAND_TLS_{name}"] = str(value)
    ctx.obj = Settings(ClientConfig.from_env(environ, timeout=timeout), json_output=json_output)


def main() -> None:
    """The console script entry point."""
    app(prog_name="overland")


__all__ = ["EXIT_CODES", "Settings", "app", "exit_code_for", "main"]
