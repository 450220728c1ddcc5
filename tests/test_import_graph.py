"""The import graph of the two packages, read from the source (ast): ``engines`` never imports
``monitor``, and neither package has an import circle. Imports inside functions and under
``TYPE_CHECKING`` count too: a circle that only lazy imports keep working is still a circle."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules ``path`` imports (``from pkg import name`` is ``pkg.name`` when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return found


def import_graph(*packages: str) -> dict[str, set[str]]:
    paths = [p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) & modules for p in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
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
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1 or v in graph[v]:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_engines_never_imports_monitor():
    graph = import_graph("engines", "monitor")
    offenders = {m: sorted(i for i in imported if i.split(".")[0] == "monitor")
                 for m, imported in graph.items() if m.split(".")[0] == "engines"}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_import_circles_in_engines_and_monitor():
    assert circles(import_graph("engines", "monitor")) == []


def test_the_check_sees_circles_and_lazy_imports():
    """The graph reader itself: relative, lazy and ``from package import module`` imports."""
    graph = import_graph("engines")
    assert "engines.metrics" in graph["engines.evaluate"]  # from .metrics import ...
    assert "engines.models.bifusion" not in graph["engines.models"]  # named in the registry, not imported
    assert "engines.images" in graph["engines.baselines.finetuned"]  # inside a function
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"a"}, "b": set()}) == [["a"]]
