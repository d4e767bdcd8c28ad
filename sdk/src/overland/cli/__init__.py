"""The ``overland`` command line: ``overland [OPTIONS] policy|vswitch|replica|vm|trace ...``.

Installed with the SDK's ``cli`` extra (``pip install 'overland-sdk[cli]'``, which adds typer and
rich). Root options (``--json``, ``--timeout``, ``--tls-*``) come before the group; each group takes
``--endpoint``. Exit codes: 0 ok, 1 other error, 2 usage or configuration (or the extra is missing),
3 invalid argument, 4 not found, 5 already exists, 6 failed precondition or stale revision,
7 unavailable or deadline exceeded, 8 permission denied or unauthenticated, 130 interrupted.

This module imports nothing of the CLI itself: ``main`` checks that the extra is installed, then loads
the root command (``overland.cli.root``), which loads a group's module only when that group runs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import TYPE_CHECKING

from overland._lazy import lazy_names
from overland.cli.exits import EXIT_USAGE

if TYPE_CHECKING:
    from overland.cli.common import EXIT_CODES as EXIT_CODES
    from overland.cli.common import Settings as Settings
    from overland.cli.common import exit_code_for as exit_code_for
    from overland.cli.root import app as app

# What the ``cli`` extra brings; without them the command says how to get them instead of a traceback.
CLI_EXTRA = ("typer", "rich")
MISSING_EXTRA = "overland: the CLI needs the cli extra: pip install 'overland-sdk[cli]'"


def main() -> None:
    """The console script entry point."""
    if any(importlib.util.find_spec(name) is None for name in CLI_EXTRA):
        print(MISSING_EXTRA, file=sys.stderr)  # noqa: T201 - the one line the command prints
        sys.exit(EXIT_USAGE)
    from overland.cli.root import app  # noqa: PLC0415 - only once the extra is known to be there

    try:
        app(prog_name="overland")
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    # The command is done and its output written: leave without the interpreter's teardown, which with
    # grpc loaded (its threads, its C core) took 30-80 ms of a 0.3 s call on the bench machine. typer
    # ends with SystemExit and an int; anything else (a bug's traceback) takes the usual way out above.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (``overland ... | head``): nothing more can be written anyway
        pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


PUBLIC_NAMES = {
    "overland.cli.common": ("EXIT_CODES", "Settings", "exit_code_for"),
    "overland.cli.root": ("app",),
}
__getattr__ = lazy_names(__name__, PUBLIC_NAMES)
__all__ = [name for names in (("main",), *PUBLIC_NAMES.values()) for name in names]
