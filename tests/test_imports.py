"""The package's import graph: the command line sits on top, nothing imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "roadseg"


def _imported_modules(path: Path, *, top_level: bool = False) -> set[str]:
    """Modules a file imports: anywhere, or only at module level (run on import)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_module_but_the_entry_point_imports_the_command_line():
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "roadseg.cli" in _imported_modules(path)
    )
    assert importers == ["__main__.py"]


def test_the_light_modules_load_without_torch():
    """paths, errors, training and cli are what every command's first checks use: they must not
    pull in torch (seconds of start-up before a missing file is reported)."""
    for name in ("paths.py", "errors.py", "training.py", "cli.py"):
        found = _imported_modules(PACKAGE / name, top_level=True)
        heavy = {m for m in found if m.split(".")[0] in ("torch", "pytorch_lightning")}
        assert not heavy, f"{name} imports {heavy} at module level"
