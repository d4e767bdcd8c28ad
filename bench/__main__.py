"""``python -m bench`` (``make bench``): run every benchmark script of this directory in turn.

Each script runs as ``python -m bench.<name>`` with its default arguments, in its own process, so
one script's threads and servers cannot disturb the next. ``python -m bench NAME...`` runs only
those; ``--list`` shows them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

# A whole benchmark past this is stuck, not slow.
SCRIPT_TIMEOUT_SECONDS = 3600


def scripts() -> list[str]:
    """The runnable scripts; helper modules (no ``__main__`` block) are skipped."""
    here = Path(__file__).parent
    return sorted(
        path.stem
        for path in here.glob("*.py")
        if not path.stem.startswith("_") and '__name__ == "__main__"' in path.read_text()
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="scripts to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    args = parser.parse_args()
    available = scripts()
    if args.list:
        print("\n".join(available))
        return 0
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(available)})")
    failed = []
    for name in args.names or available:
        print(f"== bench.{name}", flush=True)
        start = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", f"bench.{name}"], timeout=SCRIPT_TIMEOUT_SECONDS, check=False
            )
            code = result.returncode
        except subprocess.TimeoutExpired:
            code = -1
        outcome = "ok" if code == 0 else f"FAILED ({code})"
        print(f"== bench.{name}: {outcome} in {time.monotonic() - start:.0f} s\n")
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
