"""The layering rule: libs/ (the core and adapters) never imports a service."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_services_exist() -> None:
    assert {"watcher", "compiler", "pusher"} <= SERVICES


def test_libs_never_import_services() -> None:
    offenders = []
    for path in sorted((ROOT / "libs").rglob("*.py")):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "shardgate" and len(parts) > 1 and parts[1] in SERVICES:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []
