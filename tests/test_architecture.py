"""The shape of the package: no import cycle among lcdash modules (function-level imports included),
and DuckDB (SQL, connections) only inside lcdash/store/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lcdash"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name an import statement anywhere in the file (also inside functions) names;
    `from a import b` yields both a and a.b (b may be a submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (a name resolves to its longest known module)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in files.items():
        deps = {resolve(n) for n in imported_names(path, mod) if n == top or n.startswith(top + ".")}
        graph[mod] = {d for d in deps if d is not None and d != mod}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_detector_finds_a_cycle_and_accepts_a_tree():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and "pkg.a" in graph["pkg.sub.b"]
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_lcdash_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "lcdash.store.results" in graph["lcdash.tasks"]  # the walk sees the package
    assert find_cycles(graph) == []


def test_only_the_store_imports_duckdb():
    users = []
    for path in PACKAGE.rglob("*.py"):
        names = imported_names(path, module_name(path, PACKAGE))
        if any(n == "duckdb" or n.startswith("duckdb.") for n in names):
            users.append(str(path.relative_to(PACKAGE.parent)))
    assert users and all(u.startswith("lcdash/store/") for u in users), users


@pytest.mark.parametrize("module", ["lcdash.jobs", "lcdash.tasks", "lcdash.lightcurve", "lcdash.evaluation"])
def test_worker_side_modules_do_not_load_duckdb(module):
    """A job worker imports the job engine and the library, never the store (DuckDB, ~1 s)."""
    code = f"import sys, {module}; print('duckdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)  # fmt: skip
    assert out.stdout.strip() == "False"
