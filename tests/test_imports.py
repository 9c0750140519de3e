"""No import circle among the project's modules (tickcast, dataflows, models, api).

Read from the source (``ast``), so it costs milliseconds and imports nothing: an edge
A -> B for every ``import B`` / ``from B import x`` in A, at module level or inside a
function (a deferred import hides a circle from the interpreter, not from a reader),
``TYPE_CHECKING`` blocks included. ``from package import module`` counts as an edge to
that module; importing ``a.b.c`` also imports its packages ``a`` and ``a.b``, which
counts as well, except from a package to its own submodules and back (a package
``__init__`` re-exporting its parts is no circle a reader trips over).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

ROOTS = ("tickcast", "dataflows", "models", "api")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                # the module itself, else the nearest enclosing module that exists
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod and not (mod.startswith(t + ".") or t.startswith(mod + ".")):
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read() -> None:
    g = import_graph()
    assert "dataflows.chunks" in g["dataflows.kafka.source"]
    assert "tickcast.config" in g["dataflows.kafka.topic"]
    assert g["dataflows.chunks"] == set()


def test_cycle_finder_finds_a_planted_circle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)
