"""The package's layering (README, "Architecture"): imports only go down the stack, and no module imports
itself back through others. Module-level AND function-level imports count (a function-level import is still a
dependency); imports under `if TYPE_CHECKING:` do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

import obliviate

PKG = Path(obliviate.__file__).resolve().parent

# Top to bottom. A module may import from its own layer or any layer below, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("cli", "__main__")),
    ("api", ("api", "__init__")),
    ("runs", ("runs",)),
    ("bench", ("bench",)),
    ("methods", ("methods", "edit")),
    ("eval", ("eval",)),
    ("models", ("models",)),
    ("data", ("data",)),
    ("base", ("utils", "config", "errors", "registry")),
]


def module_name(path: Path, root: Path = PKG.parent) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str], root: Path = PKG.parent) -> set[str]:
    """The package modules `path` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path, root)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        if name and name != me:
            found.add(name)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for n in child.orelse:
                    visit(n)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("obliviate"):
                        add(a.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = pkg.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                if base.startswith("obliviate"):
                    for a in child.names:
                        full = f"{base}.{a.name}"
                        add(full if full in modules else base)
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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

    import sys

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return i
    raise AssertionError(f"{module}: not in any layer; add its top-level name to LAYERS in tests/test_layers.py")


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_go_down_the_layers():
    bad = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
           for m, deps in import_graph().items() for d in sorted(deps) if layer_of(d) < layer_of(m)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_checker_finds_a_cycle_and_a_function_level_import(tmp_path):
    """The checker itself: a function-level import closing a circle is found; a TYPE_CHECKING one is not."""
    pkg = tmp_path / "obliviate"
    pkg.mkdir()
    (pkg / "a.py").write_text("from obliviate import b\n")
    (pkg / "b.py").write_text("def f():\n    from obliviate.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from obliviate import a\n")
    modules = {"obliviate.a", "obliviate.b", "obliviate.c"}
    graph = {f"obliviate.{n}": imports_of(pkg / f"{n}.py", modules, tmp_path) for n in "abc"}
    assert graph["obliviate.c"] == set()
    assert cycles(graph) == [["obliviate.a", "obliviate.b"]]
