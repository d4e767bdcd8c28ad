"""``python -m services <name> [args...]``: run one Overland service; the container image's entry point.

Each service keeps its own command line in ``services/<name>/__main__.py``; this only picks the
service and hands it the remaining arguments, so the one image serves policy, vswitch and replica.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

SERVICES = ("policy", "vswitch", "replica")
USAGE = f"usage: overland-service {{{','.join(SERVICES)}}} [service arguments...]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)  # noqa: T201 - the dispatcher's help is its output
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SERVICES:
        print(f"unknown service {name!r}\n{USAGE}", file=sys.stderr)  # noqa: T201
        return 2
    # The service parses sys.argv itself, as it does under `python -m services.<name>`.
    sys.argv = [f"overland-service {name}", *rest]
    runpy.run_module(f"services.{name}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
