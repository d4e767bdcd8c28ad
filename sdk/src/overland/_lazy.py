"""A package's public names, imported when first used (PEP 562), so that importing the package is cheap.

The ``overland`` console script imports ``overland.cli``, and with it ``overland``: were the package to
import its clients eagerly, ``overland --help`` would pay for grpc and every generated module it never
uses. ``overland.PolicyClient`` still works (and ``from overland import PolicyClient``); type checkers
see the names through the package's ``TYPE_CHECKING`` imports, which a unit test keeps equal to the
names given here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_names(package: str, homes: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each name of ``homes`` (module -> names)
    from its module on first access, and keeps it on the package so later accesses are plain lookups."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module attribute hook of PEP 562
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
