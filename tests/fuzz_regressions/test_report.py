"""fuzz/report.py: the figures table of docs/RELIABILITY.md from recorded runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.figures import FIGURES_ENV, record

REPORT = Path(__file__).resolve().parents[2] / "fuzz" / "report.py"


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_report", REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorded_figures_become_the_table_with_totals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = tmp_path / "figures.jsonl"
    monkeypatch.setenv(FIGURES_ENV, str(figures))
    for case, requests, lost in (("kill -9", 800, 0), ("stopped", 1200, 0)):
        record("database-fault", backend="postgresql", case=case, requests=requests,
               issued=100, refused_503=requests - 100, other_5xx=0, lost=lost)  # fmt: skip
    report = _report()
    text = report.render(report.load_figures(figures))
    assert "| postgresql | kill -9 | 800 | 100 | 700 | 0 | 0 |" in text
    assert (
        "2 faults injected and survived; 2000 requests; 0 5xx other than 503; 0 certificates lost"
        in text
    )
    assert "| fault injection: faults injected and survived | 2 (2,000 requests, 0 5xx" in text
    assert "| certificates lost (must be 0) | 0 |" in text
    assert "No figures recorded." in text  # no abuse run: said, not old numbers


def test_nothing_recorded_says_so(tmp_path: Path) -> None:
    report = _report()
    text = report.render(report.load_figures(tmp_path / "none.jsonl"))
    assert "No figures recorded (run the tests with `OSTIARY_FIGURES`)." in text
    assert "| certificates lost (must be 0) | not measured yet |" in text
