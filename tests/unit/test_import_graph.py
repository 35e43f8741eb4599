"""No import cycle among the service's modules: the graph of every import statement (those
inside functions too, so that an import moved into a function to dodge a cycle still counts),
and each module imported alone in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def modules(root: Path) -> dict[str, Path]:
    """Every module under the package directory `root`, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that importing `name` makes Python import (or find already
    imported): each one named, and the packages above it that `name` is not inside of (a
    package's `__init__` runs before its first submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from p import m` imports the submodule p.m when there is one
            targets += [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                for alias in node.names
            ]
    edges = set()
    for target in targets:
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            module = ".".join(parts[:end])
            if module in known and module != name and not name.startswith(module + "."):
                edges.add(module)
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (or a module importing
    itself), each sorted: Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imported(name, path, known) for name, path in known.items()}


def test_the_service_has_no_import_cycle() -> None:
    graph = import_graph(ROOT / "service")
    assert "service.jobs.registry" in graph  # the graph is the service's, read as it is
    assert "service.jobs.base" in graph["service.jobs.registry"]
    assert cycles(graph) == []


def test_a_cycle_is_found_through_a_package_and_inside_a_function(tmp_path: Path) -> None:
    """The checker itself: the cycle the job registry once made (a package's `__init__`
    importing a module that imports, in a function, a module that imports the package)."""
    package = tmp_path / "pkg"
    (package / "jobs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "jobs" / "__init__.py").write_text("from .base import build\n")
    (package / "jobs" / "base.py").write_text("def build():\n    from .. import hub\n")
    (package / "hub.py").write_text("from .jobs import base\n")
    (package / "alone.py").write_text("import pkg.jobs.base\nfrom . import hub\n")
    graph = import_graph(package)
    assert graph["pkg.alone"] == {"pkg.jobs", "pkg.jobs.base", "pkg.hub"}
    assert cycles(graph) == [["pkg.hub", "pkg.jobs", "pkg.jobs.base"]]
    (package / "jobs" / "base.py").write_text("def build():\n    pass\n")
    assert cycles(import_graph(package)) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    # a __main__ runs its command when imported
    sorted(name for name in modules(ROOT / "service") if not name.endswith(".__main__")),
)
def test_each_module_imports_alone(module: str) -> None:
    """Imported first, in an interpreter of its own: a cycle that the order of a whole run
    hides shows here as an ImportError of a partly initialised module."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
