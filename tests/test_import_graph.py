"""The package's import graph has no cycle (function-level imports included).

DESIGN.md: an MPM is a policy plus a child main, the entry point (mpm/serve.py) is a leaf and
the child's context imports only handlers, logs and the scoreboard. A cycle, even through an
import hidden in a function, is how that shape erodes; this walks every import statement.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent / "src" / "mpmd"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that `path` imports, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "mpmd":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for target in sorted(graph[node]):
            if target == start:
                return [*trail, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*trail, target]))
    return None


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    cycles = [cycle for name in sorted(graph) if (cycle := _cycle_from(graph, name))]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_entry_point_is_a_leaf_and_the_parent_names_no_mpm() -> None:
    graph = import_graph()
    importers = sorted(name for name, targets in graph.items() if "mpmd.mpm.serve" in targets)
    assert importers == ["mpmd.cli"]
    assert not graph["mpmd.mpm.parent"] & {"mpmd.mpm.prefork", "mpmd.mpm.worker", "mpmd.mpm.event"}
    assert graph["mpmd.mpm.context"] <= {
        "mpmd.config.model",
        "mpmd.handlers.router",
        "mpmd.handlers.static",
        "mpmd.handlers.status",
        "mpmd.handlers.metrics",
        "mpmd.handlers.proxy.balancer",
        "mpmd.handlers.proxy.handler",
        "mpmd.handlers.proxy.manager",
        "mpmd.http.tls",
        "mpmd.logs.access",
        "mpmd.logs.error",
        "mpmd.mpm.scoreboard",
    }


def test_the_event_loop_cannot_reach_the_blocking_connection() -> None:
    """Issue 10: EventConnection composes a Session instead of inheriting the blocking
    Connection, whose sendall the loop could otherwise reach."""
    graph = import_graph()
    event_modules = [name for name in graph if name.startswith("mpmd.mpm.event")]
    assert "mpmd.mpm.event_connection" in event_modules
    for name in event_modules:
        assert "mpmd.mpm.connection" not in graph[name], name
