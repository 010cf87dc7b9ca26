"""The layering of docs/architecture.md, checked on the source: every import points down (or
sideways, within a layer) and no project module takes part in an import loop; and no function
in flows/, tasks/, models/ or cli/ runs over 80 lines.

Read from the syntax tree, so nothing is imported. Imports inside functions count too: they run
sooner or later, and a loop closed by one (``a`` imports ``b`` at the top, ``b`` imports ``a``
in a function) still ties the two modules together."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: from the ground up; a module may import its own layer and those below it
LAYERS = {"koala": 0, "models": 1, "infra": 1, "tasks": 2, "flows": 3, "cli": 4}
#: top-level packages outside the layering
NOT_LAYERED = {"tests"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in LAYERS for p in sorted((ROOT / top).rglob("*.py"))}


MODULES = _modules()


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of ``from ... import`` in ``module`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(module: str, node: ast.AST) -> list[str]:
    """The project modules an import statement loads (a ``from`` import of a submodule names the
    submodule, of anything else the module it comes from)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(module, node)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    else:
        return []
    return [n for n in names if n.split(".")[0] in LAYERS]


def _imports(module: str, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported project module) of every import in ``module``; with ``top_level_only``
    only those that run when it is imported (not those inside functions)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for target in _targets(module, node):
            yield node.lineno, target
        for child in ast.iter_child_nodes(node):
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if not (top_level_only and nested):
                todo.append(child)


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - NOT_LAYERED == set(LAYERS), "add the new package to LAYERS (and the docs)"


def test_imports_point_down() -> None:
    upward = {
        f"{MODULES[m].relative_to(ROOT)}:{line} imports {target} "
        f"(layer {_layer(m)} -> {_layer(target)})"
        for m in MODULES
        for line, target in _imports(m)
        if _layer(target) > _layer(m)
    }
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    edges = {m: {t for _, t in _imports(m) if t != m and t in MODULES} for m in MODULES}
    cycles = _cycles(edges)
    assert not cycles, "import loops:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_check_sees_what_it_should() -> None:
    """The checks above would catch a violation: the checker reads real import lines."""
    assert "koala.images" in {t for _, t in _imports("koala.scans", top_level_only=True)}
    assert any(t.startswith("flows.") for _, t in _imports("cli.main"))
    assert not any(t.startswith("flows.") for _, t in _imports("cli.main", top_level_only=True))
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: folders whose functions must read at a glance: a longer one is carved into named steps
SHORT_FUNCTION_FOLDERS = ("flows", "tasks", "models", "cli")
MAX_FUNCTION_LINES = 80


def _long_functions(limit: int) -> list[str]:
    """``file:line name: N lines`` of every function (decorators included) over ``limit``."""
    found = []
    for top in SHORT_FUNCTION_FOLDERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    lines = (node.end_lineno or node.lineno) - start + 1
                    if lines > limit:
                        where = f"{path.relative_to(ROOT)}:{node.lineno}"
                        found.append(f"{where} {node.name}: {lines} lines")
    return found


def test_no_function_over_80_lines_in_flows_tasks_models_cli() -> None:
    long = _long_functions(MAX_FUNCTION_LINES)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
    assert any(" train_model: " in f for f in _long_functions(10)), "the check reads functions"
