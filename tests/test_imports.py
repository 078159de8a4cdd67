"""The package's import graph has no cycle, function-local imports included, and the library
never imports the maintainer module that writes into the install folder (issue 18)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "crystalzoo"


def _imports(path: Path) -> set[str]:
    """The crystalzoo modules ``path`` imports anywhere (at the top, in functions, in methods),
    except under ``if TYPE_CHECKING:`` (type hints only, never run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:  # from .x import y / from . import x
                found.update([module.split(".")[0]] if module else [a.name for a in node.names])
            elif module == "crystalzoo":
                found.update(a.name for a in node.names)
            elif module.startswith("crystalzoo."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("crystalzoo."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {path.stem}


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {p.stem for p in package.glob("*.py")}
    return {p.stem: _imports(p) & modules for p in package.glob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (``[a, b, a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert {"hub", "registry", "manifest", "crystal_graph", "dgl_graphs"} <= set(graph)
    assert "hub" in graph["registry"] and "dgl_graphs" in graph["crystal_graph"]  # function-local imports seen
    assert _cycle(graph) is None, "import cycle: " + " → ".join(_cycle(graph))


def test_the_cycle_check_finds_function_local_cycles(tmp_path):
    """Not vacuous: two modules importing each other inside functions are a cycle; an import
    under ``if TYPE_CHECKING:`` is not an edge."""
    (tmp_path / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import x\n"
                                   "def g():\n    from crystalzoo.a import f\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    graph = _graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycle(graph) == ["a", "b", "a"]


def test_the_library_never_imports_the_maintainer_module():
    """crystalzoo.maintainer writes into the install folder: only scripts and tests use it."""
    assert [m for m, deps in _graph().items() if "maintainer" in deps] == []
