"""The package's import graph keeps its floors: nothing imports upward, nothing cycles, no import hides in a function.

Floors (README, "Layout"): foundation < numerics < per-example quantities (``grads``) < ``selectors`` ‖
``train`` < ``valuation`` < ``workflows`` < the command line and reports. A module imports only from
its own floor or below; ``selectors`` and ``train`` share a floor and never import each other.
The graph is read with ``ast`` from the source files; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "jaxsubset"

# top-level name under jaxsubset -> floor; a new top-level module or package must be placed here
FLOORS = {
    "__init__": 0, "subset": 0, "types": 0, "checks": 0, "data": 0, "models": 0,
    "kernels": 1, "solvers": 1, "knn": 1,
    "grads": 2,
    "selectors": 3, "train": 3,
    "valuation": 4,
    "workflows": 5,
    "cli": 6, "cli_scores": 6, "report": 6, "outdir": 6,
}
# packages on one floor that must not import each other
SIBLINGS = {frozenset({"selectors", "train"})}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (packages named by their folder)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(node: ast.AST, here: str, is_pkg: bool, known: set[str]) -> list[str]:
    """The jaxsubset modules an import statement names (``from p import m`` names ``p.m`` when it is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == ROOT.name]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = here.split(".") if is_pkg else here.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    if mod.split(".")[0] != ROOT.name:
        return []
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]


def imports(root: Path = ROOT) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """``(graph, local)``: module -> the jaxsubset modules it imports (anywhere in the file), and every
    ``(module, line, target)`` imported inside a function or class body."""
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    local = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        nested = set()
        for scope in ast.walk(tree):
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                nested.update(id(n) for n in ast.walk(scope) if n is not scope)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, name, is_pkg, known):
                graph[name].add(target)
                if id(node) in nested:
                    local.append((name, node.lineno, target))
    return graph, sorted(set(local))


def floor_of(module: str) -> tuple[str, int | None]:
    """``(top-level name, floor)``; the floor is None for a name missing from :data:`FLOORS`."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, FLOORS.get(top)


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up a floor or across the sibling packages, and modules no floor holds."""
    bad = []
    for mod, targets in sorted(graph.items()):
        top, f = floor_of(mod)
        if f is None:
            bad.append(f"{mod}: top-level name {top!r} has no floor; add it to FLOORS (and the README)")
            continue
        for t in sorted(targets):
            ttop, tf = floor_of(t)
            if tf is None:
                continue  # reported as its own module
            if tf > f:
                bad.append(f"{mod} (floor {f}) imports {t} (floor {tf})")
            elif ttop != top and frozenset({top, ttop}) in SIBLINGS:
                bad.append(f"{mod} imports its sibling {t}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), plus self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph with every module collapsed to its top-level name under ``jaxsubset``."""
    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        top = floor_of(mod)[0]
        out.setdefault(top, set()).update(floor_of(t)[0] for t in targets if floor_of(t)[0] != top)
    return out


def test_no_function_local_jaxsubset_imports():
    _, local = imports()
    assert not local, "imports inside functions (move them to the top; a cycle they dodge is a layering bug):\n" + \
        "\n".join(f"{m}:{line} -> {t}" for m, line, t in local)


def test_no_upward_or_sibling_imports():
    graph, _ = imports()
    bad = upward(graph)
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules_or_packages():
    graph, _ = imports()
    assert cycles(graph) == []
    assert cycles(package_graph(graph)) == []


def test_the_checker_sees_what_it_should(tmp_path):
    """On a planted package: a local import, an upward import, a sibling import and a cycle are all found."""
    pkg = tmp_path / ROOT.name
    for rel, text in {
        "__init__.py": "from jaxsubset.subset import Subset\n",
        "subset.py": "class Subset: ...\n",
        "grads/__init__.py": "from . import chunk\n",
        "grads/chunk.py": "from jaxsubset.selectors import x\n",          # upward (2 -> 3)
        "selectors/__init__.py": "import jaxsubset.train.loop\nx = 1\n",  # sibling
        "train/__init__.py": "",
        "train/loop.py": "def f():\n    from jaxsubset.workflows import run\n",  # local and upward
        "workflows/__init__.py": "",
        "workflows/run.py": "from jaxsubset.workflows import other\n",
        "workflows/other.py": "from .run import f\n",                      # cycle run <-> other
        "newthing.py": "",                                                  # no floor
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph, local = imports(pkg)
    assert local == [("jaxsubset.train.loop", 2, "jaxsubset.workflows.run")]
    assert graph["jaxsubset.grads"] == {"jaxsubset.grads.chunk"}
    bad = upward(graph)
    assert "jaxsubset.grads.chunk (floor 2) imports jaxsubset.selectors (floor 3)" in bad
    assert "jaxsubset.selectors imports its sibling jaxsubset.train.loop" in bad
    assert "jaxsubset.train.loop (floor 3) imports jaxsubset.workflows.run (floor 5)" in bad  # local ones count too
    assert any("'newthing' has no floor" in b for b in bad) and len(bad) == 4
    assert cycles(graph) == [["jaxsubset.workflows.other", "jaxsubset.workflows.run"]]
    assert cycles(package_graph(graph)) == []
