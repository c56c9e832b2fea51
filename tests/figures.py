"""Figures the reliability tests measure, for ``fuzz/report.py`` (docs/RELIABILITY.md).

A test calls :func:`record`; the figures are appended as JSON lines to the file named by
``OSTIARY_FIGURES`` when it is set (``OSTIARY_FIGURES=fuzz/results/figures.jsonl
./scripts/test tests/server/test_database_faults.py ...``), and go nowhere otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES_ENV = "OSTIARY_FIGURES"


def record(kind: str, **values: Any) -> None:
    """Append one figure (``kind`` and its values) to the figures file, if one is named."""
    target = os.environ.get(FIGURES_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"kind": kind, **values}, sort_keys=True) + "\n")
