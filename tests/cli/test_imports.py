"""The import graph of bigtrain/, read from the source: no cycles, and nothing imports `bigtrain.cli`.

Every import counts, including those inside functions: a lazy import only postpones a cycle to the first
call. Importing `a.b.c` also runs the `__init__` of `a.b`, so that package is an edge too (except a
package the importer is inside of, which is already being imported). Modules imported by name at run time
(cli.py's command table, a config's class paths) are not seen: nothing may import cli.py, and class paths
point into models/ and data/.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "bigtrain"
# `python -m bigtrain` runs the command: the one module allowed to import it.
ENTRY_POINTS = {"bigtrain.__main__"}


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not `.__init__`)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute name an `ImportFrom` names, resolving relative imports."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:`, which never run."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def lazy_exports(modules: dict[str, Path]) -> dict[str, str]:
    """`package.NAME` -> the submodule a package's PEP 562 `_EXPORTS = {NAME: submodule}` imports on use."""
    out = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            if isinstance(target, ast.Name) and target.id == "_EXPORTS":
                exports = ast.literal_eval(node.value)
                out.update({f"{name}.{key}": f"{name}.{sub}" for key, sub in exports.items()})
    return out


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports, anywhere in its source (lazy exports resolved)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    lazy = lazy_exports(modules)
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, is_package)
            found.add(target)
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(names)
            found.update(lazy[n] for n in names if n in lazy)
    edges = set()
    for name in found:
        parts = name.split(".")
        for end in range(2, len(parts) + 1):
            prefix = ".".join(parts[:end])
            inside = module == prefix or module.startswith(prefix + ".")
            if prefix in modules and not inside:
                edges.add(prefix)
    return edges


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    modules = module_names()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            member = None
            while member != node:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each tangle, as a closed path."""
    return [_shortest_cycle(graph, group) for group in tangles(graph)]


def _shortest_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest closed path through the group's first module (by name), staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "bigtrain.lightning_cli" in graph["bigtrain.cli"]  # imported lazily, inside dispatch
    assert "bigtrain.errors" in graph["bigtrain.cli"]


def test_cycle_finder_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    found = [
        f"{' -> '.join(_shortest_cycle(graph, group))} (a tangle of {len(group)}: {', '.join(sorted(group))})"
        for group in tangles(graph)
    ]
    assert not found, "import cycles: " + "; ".join(found)


def test_nothing_imports_the_cli():
    graph = import_graph()
    importers = sorted(
        m for m, targets in graph.items() if "bigtrain.cli" in targets and m not in ENTRY_POINTS
    )
    assert not importers, f"these modules import bigtrain.cli (it only dispatches): {importers}"


def test_graph_follows_lazy_exports_and_skips_type_checking_blocks():
    graph = import_graph()
    # `from bigtrain.strategies import resolve_strategy` runs strategies/resolve.py through `_EXPORTS`.
    assert "bigtrain.strategies.resolve" in graph["bigtrain.lightning_cli"]
    # strategies/__init__.py names its submodules only under `if TYPE_CHECKING:` (never run).
    assert "bigtrain.strategies.resolve" not in graph["bigtrain.strategies"]
