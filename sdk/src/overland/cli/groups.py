"""The ``overland`` command's groups: the module that holds each one and its help line.

The root command lists them from here without importing them (``overland --help`` stays fast), and
each group's module takes its help from here, so the two never disagree. Nothing is imported: both
the root and the groups' shared helpers (``overland.cli.common``) read this.
"""

from typing import NamedTuple


class Group(NamedTuple):
    """A command group: the module whose ``app`` is its ``click.Group``, and its help line. (Not a
    dataclass: ``overland --help`` would import dataclasses for this alone.)"""

    module: str
    help: str


GROUPS = {
    "policy": Group("overland.cli.policy", "The policy service: the network virtualization routing table."),
    "vswitch": Group("overland.cli.vswitch", "A host's vswitch agent (NVGRE datapath)."),
    "replica": Group("overland.cli.replica", "VM replication to a DR site (Hyper-V Replica)."),
    "trace": Group("overland.cli.trace", "Traces from the JSON-lines span file (OVERLAND_SPAN_FILE)."),
}
