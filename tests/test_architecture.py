"""The engine never imports Textual: only aime_tui/ui/ (and the CLI that launches it) may."""

from __future__ import annotations

import ast
from pathlib import Path

import aime_tui

PACKAGE = Path(aime_tui.__file__).parent
ALLOWED = {"ui", "cli.py"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_engine_modules_do_not_import_textual():
    checked = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ALLOWED:
            continue
        checked.append(relative)
        textual = {name for name in imported_modules(path) if name.split(".")[0] == "textual"}
        assert not textual, f"{relative} imports {sorted(textual)}"
    assert Path("supervisor.py") in checked and Path("services/roon.py") in checked


def test_the_cli_imports_the_ui_only_when_it_runs_the_dashboard():
    tree = ast.parse((PACKAGE / "cli.py").read_text(encoding="utf-8"))
    top_level = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any("ui" in (module or "").split(".") for module in top_level)
