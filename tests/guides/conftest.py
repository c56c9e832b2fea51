"""The guides as tests: which markdown files are guides, and a fixture that runs one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.guides.markdown import Guide, parse_guide
from tests.guides.runner import GuideRun, run_guide

ROOT = Path(__file__).parents[2]
#: Every markdown file whose blocks are held to the convention of tests/guides/markdown.py.
GUIDE_FILES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*/README.md")]
)


def guide_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def runnable_guides() -> list[Path]:
    return [p for p in GUIDE_FILES if parse_guide(p).commands()]


@pytest.fixture
def run() -> Iterator[Callable[[Guide], GuideRun]]:
    """Runs a guide; its folder is removed afterwards, unless ``GUIDES_KEEP=1`` (to look at
    the files and logs of a failed guide; its output is in the failure message anyway)."""
    runs: list[GuideRun] = []
    require_tool("bash")

    def _run(guide: Guide) -> GuideRun:
        result = run_guide(guide)
        runs.append(result)
        return result

    yield _run
    if os.environ.get("GUIDES_KEEP") != "1":
        for result in runs:
            shutil.rmtree(result.top, ignore_errors=True)
