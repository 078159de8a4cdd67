"""The package's layout: its import graph has no cycle (function-local and type-only imports
included, and the package ``__init__`` that importing a submodule runs), no module is over 400
lines, the library never imports the maintainer module that writes into the install folder,
and it never imports its own deprecated module paths."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "crystalzoo"
MAX_LINES = 400
#: the module paths of crystalzoo 0.1 kept as thin re-exports for one release (CHANGELOG.md)
DEPRECATED = {"crystalzoo.crystal_graph", "crystalzoo.dgl_graphs", "crystalzoo.ensembles", "crystalzoo.loading",
              "crystalzoo.train_config", "crystalzoo.recipes"}


def _name(path: Path, package: Path) -> str:
    """crystalzoo/models/cgcnn.py → crystalzoo.models.cgcnn; crystalzoo/models/__init__.py → crystalzoo.models."""
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_name(p, package): p for p in package.rglob("*.py")}


def _target(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of ``from <level dots><module> import …`` in ``importer``."""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The crystalzoo modules that importing ``name`` (at ``path``) can import, anywhere in it:
    at the top, in functions and methods, under ``if TYPE_CHECKING:``. ``from X import y``
    counts X, and X.y where that is a module; importing X.Y also runs the ``__init__`` of X
    (unless X is a package ``name`` lies in)."""
    found: set[str] = set()
    top = name.split(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = (_target(name, path.name == "__init__.py", node.level, node.module) if node.level
                    else node.module or "")
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t != top and not t.startswith(top + "."):
                continue
            parts = t.split(".")
            for i in range(2, len(parts) + 1):  # the packages on the way, then the module
                found.add(".".join(parts[:i]))
    own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}  # itself, its packages
    return {m for m in found if m in modules} - own


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


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
    assert {"crystalzoo.hub", "crystalzoo.registry", "crystalzoo.models.cgcnn", "crystalzoo.graphs.dgl_adapter",
            "crystalzoo.training.loop"} <= set(graph)
    assert "crystalzoo.hub" in graph["crystalzoo.registry"]  # function-local imports seen
    assert "crystalzoo.graphs.dgl_adapter" in graph["crystalzoo.graphs.crystal_graph"]
    assert "crystalzoo.models" in graph["crystalzoo.training.loop"]  # a submodule's package __init__ runs too
    assert _cycle(graph) is None, "import cycle: " + " → ".join(_cycle(graph))


def test_the_cycle_check_sees_function_local_type_only_and_package_imports(tmp_path):
    """Not vacuous: two modules importing each other inside functions are a cycle, and so are
    type-only imports and a package whose ``__init__`` imports a module that imports the package."""
    pkg = tmp_path / "crystalzoo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import x\n"
                              "def g():\n    from crystalzoo.a import f\n")
    (pkg / "c.py").write_text("from .sub.leaf import y\n")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import y\n")
    (pkg / "sub" / "leaf.py").write_text("from ..b import g\n")
    graph = _graph(pkg)
    assert graph["crystalzoo.a"] == {"crystalzoo.b"}
    assert graph["crystalzoo.b"] == {"crystalzoo.a", "crystalzoo.c"}  # the type-only import counts
    assert graph["crystalzoo.c"] == {"crystalzoo.sub", "crystalzoo.sub.leaf"}  # the package __init__ runs
    assert graph["crystalzoo.sub.leaf"] == {"crystalzoo.b"}  # its own package's __init__ is not an edge
    assert _cycle(graph) == ["crystalzoo.a", "crystalzoo.b", "crystalzoo.a"]
    (pkg / "a.py").write_text("")
    assert _cycle(_graph(pkg)) == ["crystalzoo.b", "crystalzoo.c", "crystalzoo.sub", "crystalzoo.sub.leaf",
                                   "crystalzoo.b"]


def test_no_module_is_over_400_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert len(sizes) > 40 and max(sizes.values()) > 250  # the package, not an empty folder
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_the_library_never_imports_the_maintainer_module():
    """crystalzoo.maintainer writes into the install folder: only scripts and tests use it."""
    assert [m for m, deps in _graph().items() if "crystalzoo.maintainer" in deps] == []


def test_the_library_never_imports_its_deprecated_paths():
    """The 0.1 module paths are thin re-exports for users; nothing inside crystalzoo goes through them."""
    graph = _graph()
    assert DEPRECATED <= set(graph)
    assert {m: sorted(deps & DEPRECATED) for m, deps in graph.items() if deps & DEPRECATED} == {}


def test_the_deprecated_paths_still_give_the_same_objects():
    import importlib
    import warnings

    import crystalzoo
    import crystalzoo.loading as old_loading
    from crystalzoo.ensembles import CrystalEnsemble as old_ensemble
    from crystalzoo.models import CrystalEnsemble, load_model

    assert old_ensemble is CrystalEnsemble and old_loading.load_model is load_model is crystalzoo.load_model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(old_loading)
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == [
        "crystalzoo.loading is deprecated: import from crystalzoo.models.factory (crystalzoo 0.2.0 moved it)"]


def test_the_library_uses_none_of_its_deprecated_names(tmp_path):
    """Predicting, embedding, fine-tuning, saving and loading raise none of crystalzoo's own
    deprecation warnings (``config()``, ``num_atoms``, the 0.1 module paths): those are for users."""
    import warnings

    from crystalzoo import example_structures, finetune, load_model

    ours = r"(crystalzoo\.\w+|model\.config\(\)|head\.config\(\)|CrystalGraph\.\w+) is deprecated"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=ours, category=DeprecationWarning)
        model = load_model("formation")
        model.predict(example_structures())
        model.embed(example_structures(), kind="pooled")
        model.predict_frame(example_structures())
        r = finetune("bundled:mp-band-gap", "band_gap", backbone="formation", freeze=2, train_size=40, val_size=20,
                     test_size=20, epochs=1, progress=False, out_dir=tmp_path / "run")
        load_model(str(tmp_path / "run")).predict(example_structures())
        assert r.model.to_config()["head"]["targets"] == ["band_gap"]
    with pytest.warns(DeprecationWarning, match="model.config\\(\\) is deprecated: use model.to_config\\(\\)"):
        assert model.config() == model.to_config()
