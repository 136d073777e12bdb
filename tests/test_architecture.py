"""The layers, as import rules: lower layers never import the upper ones.

core, store, clients and services are the engine's insides; control, reports, cli and ui
are built on them. engine.py wires them together and config.py is read by all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aime_tui

PACKAGE = Path(aime_tui.__file__).parent
ENGINE_LAYERS = ("core", "store", "clients", "services")
UPPER_LAYERS = ("control", "reports", "cli", "ui")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports count too)."""
    package = ".".join(("aime_tui", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return names


def modules_under(*layers: str) -> list[Path]:
    return sorted(path for layer in layers for path in (PACKAGE / layer).rglob("*.py"))


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "aime_tui" and len(parts) > 1 else None


def test_the_tree_has_the_layers():
    for layer in (*ENGINE_LAYERS, *UPPER_LAYERS, "demo"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize("path", [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "ui"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_outside_ui_imports_textual_at_module_level(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module)
    assert not {name for name in top if name.split(".")[0] == "textual"}
    assert not {name for name in top if layer_of(name) == "ui"}, "the UI is imported only when a dashboard runs"


@pytest.mark.parametrize("path", modules_under(*ENGINE_LAYERS, "demo"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_engine_layers_import_no_upper_layer_and_no_textual(path):
    imports = imported_modules(path)
    assert not {name for name in imports if name.split(".")[0] == "textual"}
    upper = {name for name in imports if layer_of(name) in UPPER_LAYERS}
    assert not upper, f"{path.relative_to(PACKAGE)} imports {sorted(upper)}"


@pytest.mark.parametrize("path", modules_under("clients"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_protocol_clients_import_no_service(path):
    services = {name for name in imported_modules(path) if layer_of(name) == "services"}
    assert not services, f"{path.relative_to(PACKAGE)} imports {sorted(services)}"


def test_the_rules_see_lazy_imports():
    # The checker must see an import inside a function, or the rules above prove little.
    assert "aime_tui.ui.app" in imported_modules(PACKAGE / "cli" / "main.py")


TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
MODEL_NAMES = {"RunState", "ServiceView", "LogEvent", "StateEvent", "RestoreSummary", "Event", "Listener"}


def python_files() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *TESTS.glob("*.py"), *(REPO / "benchmarks").glob("*.py")])


def from_imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]


def test_the_vocabulary_is_imported_from_the_model():
    """States, views and events come from core/model.py, not through a module that uses them."""
    through = [
        f"{path.relative_to(REPO)}: {alias.name}"
        for path in python_files()
        for node in from_imports(path)
        if node.module.startswith("aime_tui.") and node.module != "aime_tui.core.model"
        for alias in node.names
        if alias.name in MODEL_NAMES
    ]
    assert not through


def test_no_test_module_imports_another_and_none_patches_sys_path():
    """Shared helpers live in helper modules (pyproject's pythonpath makes tests/ importable)."""
    for path in TESTS.glob("*.py"):
        imported = {node.module for node in from_imports(path)}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {name for name in imported if name.split(".")[0].startswith("test_")}, path.name
        patches = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                   and ast.unparse(node.func.value) == "sys.path"]
        assert not patches, path.name
