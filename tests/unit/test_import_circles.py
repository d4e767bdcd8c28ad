"""No import circles in ``services/`` or the SDK (``sdk/src/overland/``), read from the source with ``ast``.

The graph has an edge for every import a module runs: at the top and inside functions too, because a
function-local import that closes a circle is still a circle (it only hides it until the call; both
circles this test was written for were hidden that way). Imports under ``if TYPE_CHECKING:`` are left
out: they never run. An edge goes to the module an import names (for ``from P import N``, to ``P.N``
when that is a module, else to ``P``); the parent packages Python initialises first are not edges, so
a package whose ``__init__`` imports its own submodules is no circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = ((REPO / "services", "services"), (REPO / "sdk" / "src" / "overland", "overland"))


def module_files(trees: tuple[tuple[Path, str], ...]) -> dict[str, Path]:
    """Every module of the trees by dotted name (a package by its own name, for its ``__init__``)."""
    modules = {}
    for root, package in trees:
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _import_nodes([child])
            elif isinstance(child, ast.ExceptHandler | ast.match_case):
                yield from _import_nodes(child.body)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the trees that module ``name`` (at ``path``) imports when it runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [target if target in modules else base for target in targets]
        for target in targets:
            module = target
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def import_graph(trees: tuple[tuple[Path, str], ...]) -> dict[str, set[str]]:
    modules = module_files(trees)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_services_and_the_sdk_have_no_import_circles() -> None:
    graph = import_graph(TREES)
    assert len(graph) > 100  # the trees were found
    assert circles(graph) == []


def test_the_check_sees_circles_through_function_imports_but_not_type_checking_ones(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.a import A\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\nA = 1\n",
        "b.py": "from pkg import a\nB = 2\n",
        "c.py": "def late():\n    from .sub import d\n    return d\n",
        "sub/__init__.py": "",
        "sub/d.py": "try:\n    import pkg.c\nexcept ImportError:\n    pass\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(((root, "pkg"),))
    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == set()
    assert graph["pkg.b"] == {"pkg.a"}
    assert circles(graph) == [["pkg.c", "pkg.sub.d"]]
