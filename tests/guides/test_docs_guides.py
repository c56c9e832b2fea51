"""The command blocks of docs/*.md (and README.md) run, in order, one bash per file, except
those marked with the reason they cannot run here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.guides.conftest import ROOT, guide_id, runnable_guides
from tests.guides.markdown import Guide, parse_guide
from tests.guides.runner import GuideRun

EXAMPLES = ROOT / "examples"
DOCS = [p for p in runnable_guides() if EXAMPLES not in p.parents]


@pytest.mark.parametrize("path", [pytest.param(p, id=guide_id(p)) for p in DOCS])
def test_the_command_blocks_of_the_doc_run(path: Path, run: Callable[[Guide], GuideRun]) -> None:
    result = run(parse_guide(path))
    assert result.returncode == 0, result.explain()
    assert ">>> guide finished" in result.output
