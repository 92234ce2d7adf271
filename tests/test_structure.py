"""The package's layout: rooms that do not lean on each other the wrong way, no import cycle,
comments that cite what is in the repository."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fss_sam2"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that `name` imports anywhere (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names} & set(modules)  # `from . import viz`
            found.update(submodules if submodules else {base})
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["fss_sam2.engine.train"] >= {"fss_sam2.engine.evaluate"}  # the parser sees real edges
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("room", ["fss_sam2.engine", "fss_sam2.data", "fss_sam2.modules", "fss_sam2.backbones",
                                  "fss_sam2.tutorial.tables"])
def test_the_real_pipeline_never_imports_the_toy(room):
    modules = _modules()
    for name, path in modules.items():
        if name == room or name.startswith(room + "."):
            toy = sorted(m for m in _imports(name, path, modules) if m.startswith("fss_sam2.toy"))
            assert toy == [], f"{name} imports {toy}"


def test_importing_the_engine_loads_nothing_of_the_toy():
    code = ("import sys, fss_sam2.engine.evaluate, fss_sam2.engine.train, fss_sam2.engine.predict, "
            "fss_sam2.tutorial.tables; print([m for m in sys.modules if m.startswith('fss_sam2.toy')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_comments_cite_only_what_the_repository_holds():
    pattern = re.compile(r"reference §|DESIGN §|\bW[0-9]+\b")
    hits = [f"{p.relative_to(REPO)}:{i}" for p in PACKAGE.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
    assert (REPO / "docs" / "deviations.md").is_file()
