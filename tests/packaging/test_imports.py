"""Imports that must run one way only (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


PROVISIONERS = AUTHORITY.parent / "provisioners"


@pytest.mark.parametrize(
    "piece", ["oidc_id_token", "oidc_identity", "oidc_code_exchange", "single_use"]
)
def test_the_oidc_pieces_never_import_the_oidc_provisioner(piece: str) -> None:
    assert "ostiary.provisioners.oidc" not in imported_modules(PROVISIONERS / f"{piece}.py")


def test_the_client_redeems_a_code_without_the_store() -> None:
    """``client/oidc.py`` imports the code exchange; it must not bring SQLAlchemy along."""
    code = (
        "import sys, ostiary.provisioners.oidc_code_exchange; "
        "print(sorted(m for m in sys.modules if m.startswith(('sqlalchemy', 'ostiary.store'))))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert answer.stdout.strip() == "[]"


def test_approval_decisions_build_on_the_queue_and_the_queue_on_the_provisioner() -> None:
    decisions = imported_modules(PROVISIONERS / "approval_decisions.py")
    queue = imported_modules(PROVISIONERS / "approval_queue.py")
    provisioner = imported_modules(PROVISIONERS / "approval.py")
    assert {"ostiary.provisioners.approval", "ostiary.provisioners.approval_queue"} <= decisions
    assert "ostiary.provisioners.approval" in queue
    assert "ostiary.provisioners.approval_decisions" not in queue
    assert not {m for m in provisioner if m.startswith("ostiary.provisioners.approval_")}


GATEWAY = AUTHORITY.parent / "gateway"


def test_the_upstream_side_never_imports_the_client_side() -> None:
    assert "ostiary.gateway.http" not in imported_modules(GATEWAY / "upstream.py")
    exchange = imported_modules(GATEWAY / "exchange.py")
    assert not {m for m in exchange if m.startswith("ostiary.gateway.")}
