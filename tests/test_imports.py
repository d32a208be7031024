"""The package's import graph: layers, the command line on top, no circle anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "roadseg"
HEAVY = ("torch", "pytorch_lightning", "lightning", "segmentation_models_pytorch", "timm")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported_modules(path: Path, *, top_level: bool = False) -> set[str]:
    """Modules a file imports: anywhere (also inside functions), or only at module level
    (run on import). ``from roadseg.cli import data`` counts as ``roadseg.cli.data``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in MODULES
            )
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _graph(*, top_level: bool = False) -> dict[str, set[str]]:
    """roadseg module -> the roadseg modules it imports (a package's import of its own
    submodules and the submodules' import of their package are not edges of a circle)."""
    return {
        name: {
            m for m in _imported_modules(path, top_level=top_level)
            if m in MODULES and m != name and not m.startswith(f"{name}.")
            and not name.startswith(f"{m}.")
        }
        for name, path in MODULES.items()
    }  # fmt: skip


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen, todo = set(), list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph[name]
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others."""
    reach = {name: _reachable(graph, name) for name in graph}
    groups = {
        tuple(sorted({name} | {m for m in reach[name] if name in reach[m]}))
        for name in graph
        if name in reach[name]
    }
    return [list(g) for g in sorted(groups)]


def test_no_import_circle_anywhere_in_the_package():
    """Counting imports inside functions too: a circle hidden in a function is still one."""
    assert _cycles(_graph()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_but_the_entry_point_imports_the_command_line():
    importers = sorted(
        name
        for name, path in MODULES.items()
        if not name.startswith("roadseg.cli")
        and any(m.startswith("roadseg.cli") for m in _imported_modules(path))
    )
    assert importers == ["roadseg.__main__"]


def test_the_command_line_loads_without_torch():
    """What every command's first checks use (the CLI, paths, errors, options, run folders)
    must not pull in torch or Lightning, even through other modules: seconds of start-up
    before a missing file is reported."""
    reached, todo = set(), ["roadseg.cli"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [m for m in _imported_modules(MODULES[name], top_level=True) if m in MODULES]
    assert {"roadseg.options", "roadseg.runs", "roadseg.checkpoints"} <= reached
    for name in sorted(reached):
        found = _imported_modules(MODULES[name], top_level=True)
        heavy = {m for m in found if m.split(".")[0] in HEAVY}
        assert not heavy, f"{name} (loaded by roadseg.cli) imports {heavy} at module level"


def test_no_module_of_the_package_is_over_500_lines():
    """A module a reader can hold in mind; the lint rules (C901, PLR0915) do the same for
    functions."""
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
