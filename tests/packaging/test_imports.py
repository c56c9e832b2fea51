"""Imports that must run one way only (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import ostiary.authority

AUTHORITY = Path(ostiary.authority.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_token_ca_builds_on_the_ca_folder_and_not_the_reverse() -> None:
    assert "ostiary.authority.folder" in imported_modules(AUTHORITY / "token_ca.py")
    assert "ostiary.authority.token_ca" not in imported_modules(AUTHORITY / "folder.py")
