"""docs/architecture.md names modules and pages by path: each must exist, so the page cannot drift
from the tree as modules move."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
# Backticked names that look like a file or folder of the tree: `a/b.py`, `docs/x.md`, `vm/`, `table.py`.
NAMED = re.compile(r"`([\w./-]+(?:\.py|\.md|/))`")
ROOTS = ("", "services/", "services/common/", "services/replica/", "services/vswitch/", "sdk/src/overland/")


def named_paths(text: str) -> set[str]:
    return {name for name in NAMED.findall(text) if not name.startswith(".")}


def resolves(name: str) -> bool:
    """A name is a path from the repository's root, or one of the roots above, or a module the tree
    has under that file name (the tables name a module after its package's row)."""
    if any((REPO / root / name).exists() for root in ROOTS):
        return True
    if "/" not in name.rstrip("/"):
        return any(
            path.is_file() for top in ("services", "sdk/src/overland") for path in (REPO / top).rglob(name)
        )
    return False


def test_every_path_the_architecture_page_names_exists() -> None:
    names = named_paths(DOC.read_text())
    assert len(names) > 40, "the page names the modules of each step"
    missing = sorted(name for name in names if not resolves(name))
    assert missing == []


def test_a_moved_module_would_be_caught() -> None:
    assert not resolves("policy/no_such_module.py")
    assert resolves("policy/store.py")
