"""The ``overland`` command's groups: the module that holds each one and its help line, and how every
``typer.Typer`` of the CLI is made.

The root command lists the groups from here without importing them (``overland --help`` stays fast),
and each group's module takes its help from here, so the two never disagree. Only typer is imported:
both the root and the groups' shared helpers (``overland.cli.common``) read this.
"""

from typing import Any, NamedTuple

import typer


class Group(NamedTuple):
    """A command group: the module whose ``app`` is its ``typer.Typer``, and its help line. (Not a
    dataclass: ``overland --help`` would import dataclasses for this alone.)"""

    module: str
    help: str


GROUPS = {
    "policy": Group("overland.cli.policy", "The policy service: the network virtualization routing table."),
    "vswitch": Group("overland.cli.vswitch", "A host's vswitch agent (NVGRE datapath)."),
    "replica": Group("overland.cli.replica", "VM replication to a DR site (Hyper-V Replica)."),
    "vm": Group("overland.cli.vm", "A site's VMs on qemu (New-VM, Start-VM, Stop-VM, Get-VM, Remove-VM)."),
    "trace": Group("overland.cli.trace", "Traces from the JSON-lines span file (OVERLAND_SPAN_FILE)."),
}


def new_typer(name: str | None, help_text: str, **options: Any) -> typer.Typer:
    """A ``typer.Typer`` as the whole CLI has them: plain help rather than rich's, which imports rich
    and, to list the commands, every group (``overland --help`` took +0.45 s instead of +0.09 s, with
    a budget of 0.2 s), and with that plain usage errors; no shell-completion options; a bug's
    traceback as Python prints it.

    typer takes the help style from the ``Typer`` a command is built from (a group's own, since the
    root builds each group alone when it runs): every group module makes its ``app`` here."""
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        rich_markup_mode=None,
        add_completion=False,
        pretty_exceptions_enable=False,
        **options,
    )
