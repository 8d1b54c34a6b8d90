"""The package's import graph, read from its source: no cycles, no private names borrowed across modules."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "groupsnn"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["groupsnn", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str):
    """``(imported module, imported name or None)`` for every import in ``module``, at any depth."""
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = _package_of(module).split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                yield (f"{base}.{alias.name}", None) if f"{base}.{alias.name}" in MODULES else (base, alias.name)


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _dependencies(module: str) -> set[str]:
    """Package modules that importing ``module`` runs: each import's target and the packages above it
    (their ``__init__`` runs first), except packages that already hold ``module``."""
    found = set()
    for target, _ in _imports(module):
        parts = target.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name in MODULES and name != module and not _inside(module, name):
                found.add(name)
    return found


def _private_imports(module: str) -> list[str]:
    """Imports of a name that starts with ``_`` from another module, and of a ``_module`` from outside
    the package that holds it. Dunder names (``__version__``) are public."""
    bad = []
    for target, name in _imports(module):
        if not _inside(target, "groupsnn"):
            continue
        if name is not None and name.startswith("_") and not name.startswith("__"):
            bad.append(f"{target}.{name}")
        parts = target.split(".")
        for depth, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__") and not _inside(module, ".".join(parts[:depth])):
                bad.append(target)
    return bad


def _cycle() -> list[str]:
    graph = {m: sorted(_dependencies(m)) for m in MODULES}
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in graph[m]:
            if state.get(n) == "open":
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return []


def test_the_import_graph_has_no_cycle():
    cycle = _cycle()
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_borrows_private_names(module):
    assert _private_imports(module) == []


def test_the_checks_see_a_cycle_and_a_private_import(monkeypatch, tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .b import _helper\n")
    b.write_text("def f():\n    from . import a\n")
    monkeypatch.setitem(MODULES, "groupsnn.a", a)
    monkeypatch.setitem(MODULES, "groupsnn.b", b)
    assert _cycle() in (["groupsnn.a", "groupsnn.b", "groupsnn.a"], ["groupsnn.b", "groupsnn.a", "groupsnn.b"])
    assert _private_imports("groupsnn.a") == ["groupsnn.b._helper"]
    b.write_text("from .models._registry import create\n")
    assert _private_imports("groupsnn.b") == ["groupsnn.models._registry"]


def _reaches(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for n in _dependencies(todo.pop()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("groupsnn.models.")
                                          and m != "groupsnn.models.pretrained"))
def test_an_architecture_knows_nothing_of_simulation(module):
    # pretrained.py loads checkpoints (which rebuild SNNs); the architectures and the registry do not
    assert not _reaches(module) & {"groupsnn.simulate", "groupsnn.stats", "groupsnn.correct", "groupsnn.convert"}
