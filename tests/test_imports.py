"""The import graph between coursekit's modules, read with `ast` (nothing is imported): no cycle, and the
sandbox's modules import nothing of the host."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "coursekit"
SANDBOX = "coursekit.in_sandbox"
# The scanner's walker and its rules and magics name each other (for types only); issue 23 part 4 takes
# the cycle apart. Remove it from here then: a known cycle that no longer exists fails the test too.


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def imported_names(module: str, tree: ast.Module) -> set[str]:
    """Every name an import statement anywhere in the module (functions and `if TYPE_CHECKING` included)
    asks for, relative imports resolved; `from X import y` asks for X.y when that is a module, else for X."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            source = ".".join(part for part in (base, node.module or "") if part)
            names |= {f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                      for alias in node.names}
    return names


def coursekit_imports(module: str) -> set[str]:
    """The coursekit modules `module` imports. Inside the sandbox, the in_sandbox folder is on the path:
    its modules import each other by their bare names."""
    names = imported_names(module, ast.parse(MODULES[module].read_text()))
    if module.startswith(SANDBOX + "."):
        names |= {f"{SANDBOX}.{name}" for name in names}
    return {name for name in names if name in MODULES and name != module}


def import_graph() -> dict[str, set[str]]:
    return {module: coursekit_imports(module) for module in MODULES}


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of modules that import each other (Tarjan's algorithm), those of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while not group or module not in group:
                group.add(stack.pop())
            groups.append(frozenset(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [group for group in groups if len(group) > 1]


def cycle_in(group: frozenset[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through the group's modules, as the path `a -> b -> ... -> a`."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        module = frontier.pop(0)
        for target in sorted(graph[module] & group):
            if target == start:
                return paths[module] + [start]
            if target not in paths:
                paths[target] = paths[module] + [target]
                frontier.append(target)
    raise AssertionError(f"no cycle through {sorted(group)}")


def test_the_module_names_and_relative_imports_are_resolved():
    assert "coursekit.grading.scan.visitor" in import_graph()["coursekit.grading.scan.scanner"]  # from .visitor import
    assert "coursekit.in_sandbox.protocol" in import_graph()["coursekit.grading.execute"]
    assert "coursekit.in_sandbox.protocol" in import_graph()["coursekit.in_sandbox.runner"]   # from protocol import


def test_no_import_cycle_between_coursekit_modules():
    graph = import_graph()
    groups = strongly_connected(graph)
    cycles = [" -> ".join(cycle_in(group, graph)) for group in groups]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_sandbox_modules_import_only_the_protocol():
    """Only the in_sandbox folder is mounted in the sandbox: of coursekit, its modules can import only what
    is there, and share only the protocol with the host (the worker starts the runner, its program)."""
    allowed = {f"{SANDBOX}.protocol"}
    for module in (name for name in MODULES if name.startswith(SANDBOX + ".")):
        starts = {f"{SANDBOX}.runner"} if module == f"{SANDBOX}.worker" else set()
        assert coursekit_imports(module) <= allowed | starts, module
