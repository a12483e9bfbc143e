"""The package's shape: three layers with arrows pointing down, and no import circles.

Imports are read from the source (module level and inside functions alike; a type-only
import under ``if TYPE_CHECKING:`` does not count), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mitigate"

# The top of each layer: cli -> runs -> library, runs -> reports -> library.
COMMANDS = ("evaluate", "score", "sensitivity", "retrain", "compare", "calibrate", "train")
# The config is the runs' vocabulary: runs read it, the library and reports never do.
UPPER = {"cli": 3, "runs": 2, "config": 2, "reports": 1}  # everything else is library: 0


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The mitigate modules ``name`` imports at run time, each with its parent packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # Importing a.b.c runs a/__init__ and a/b/__init__ first, except the packages that hold
    # ``name`` itself: they are already imported by the time ``name`` runs.
    own = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}
    targets = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        parts = target.split(".")
        targets.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {t for t in targets if t in modules and t not in own}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return UPPER.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_import_circles(graph):
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                walk(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_arrows_point_down(graph):
    """The library knows nothing of configs, runs, reports or the CLI; reports nothing of runs
    or the CLI; runs nothing of the CLI. (``mitigate`` itself only re-exports lazily.)"""
    upward = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module != "mitigate"
        for target in targets
        if _layer(target) >= _layer(module) > 0 or _layer(module) < _layer(target)
        if _room(target) != _room(module)
        and not (_room(module) == "runs" and _room(target) == "config")
    ]
    assert not upward, "\n".join(sorted(upward))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_one_home(command):
    """A newcomer finds a command's code in one guess: its run, and (for every command that
    writes a report) its rendering."""
    assert (PACKAGE / "runs" / f"{command}.py").is_file()
    assert (PACKAGE / "cli" / f"{command}.py").is_file()
    if command != "train":
        assert (PACKAGE / "reports" / f"{command}.py").is_file()
