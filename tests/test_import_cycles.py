"""The package is a pyramid: no import cycle between its subpackages (and top-level modules).

Every import counts, at module level or inside a function, absolute or relative, so a
cycle cannot hide behind a deferred import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import featureflow

ROOT = Path(featureflow.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, root: Path) -> list[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from featureflow import viz`` imports the room ``viz``
            found += [f"{base}.{a.name}" for a in node.names] if base == "featureflow" else [base]
    return found


def _room(module: str) -> str | None:
    """The subpackage (or top-level module) a module belongs to; None outside featureflow."""
    parts = module.split(".")
    return parts[1] if parts[0] == "featureflow" and len(parts) > 1 else None


def import_graph(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """room -> room it imports -> the files that import it (the package's own ``__init__`` left out)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        src = _room(_module_name(path, root))
        if src is None:
            continue
        graph.setdefault(src, {})
        for module in _imported(path, root):
            dst = _room(module)
            if dst is not None and dst != src:
                graph[src].setdefault(dst, []).append(str(path.relative_to(root)))
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one room (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_direct_and_longer_cycles():
    graph = {"a": {"b": ["a.py"]}, "b": {"c": ["b.py"]}, "c": {"a": ["c.py"]}, "d": {"a": ["d.py"]}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": []}, "b": {}}) == []


def test_function_level_and_relative_imports_are_seen(tmp_path):
    pkg = tmp_path / "featureflow"
    (pkg / "world").mkdir(parents=True)
    (pkg / "compat").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "world" / "__init__.py").write_text("def f():\n    from ..compat import x\n")
    (pkg / "compat" / "__init__.py").write_text("import featureflow.world.model\n")
    graph = import_graph(pkg)
    assert set(graph["world"]) == {"compat"} and set(graph["compat"]) == {"world"}
    assert cycles(graph) == [["compat", "world"]]


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    assert {"world", "forecast", "compat", "solvers"} <= set(graph)
    found = cycles(graph)
    detail = "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{a}->{b} in {graph[a][b][0]}" for a in c for b in c if b in graph[a]) + ")"
        for c in found
    )
    assert not found, f"import cycles between subpackages: {detail}"


#: The layers of docs/architecture.md: a room imports only from lower layers.
LAYERS = {
    "typing": 1, "version": 1,
    "utils": 2, "kernels": 2, "metrics": 2,
    "solvers": 3, "encoders": 3, "compressors": 3, "data": 3,
    "forecast": 4, "probes": 4, "viz": 4,
    "world": 5,
    "training": 6, "compat": 6, "demo": 6, "demo_forecast": 6, "cli": 6,
    "rl": 7,
}


def test_rooms_import_only_from_lower_layers():
    graph = import_graph()
    unplaced = sorted(set(graph) - set(LAYERS))
    assert not unplaced, f"rooms missing from LAYERS (and docs/architecture.md): {unplaced}"
    upward = [f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]}) in {files[0]}"
              for a, targets in graph.items() for b, files in targets.items()
              if b in LAYERS and LAYERS[b] >= LAYERS[a] and not {a, b} <= {"demo", "demo_forecast", "cli"}]
    assert not upward, "imports against the layering of docs/architecture.md: " + "; ".join(upward)
