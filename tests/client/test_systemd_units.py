"""The systemd units in contrib/ parse, and run the commands docs/client.md describes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "contrib" / "systemd"


def _exec_start(unit: str) -> str:
    lines = (UNITS / unit).read_text().splitlines()
    return next(line for line in lines if line.startswith("ExecStart="))


def test_timer_service_runs_renew_all_and_template_runs_the_daemon() -> None:
    assert "ostiary cert renew-all ${OSTIARY_CERT_DIR}" in _exec_start("ostiary-renew.service")
    daemon = _exec_start("ostiary-renew@.service")
    assert "cert renew ${OSTIARY_CERT_DIR}/%i.crt ${OSTIARY_CERT_DIR}/%i.key --daemon" in daemon
    assert "ExecReload=/bin/kill -HUP $MAINPID" in (UNITS / "ostiary-renew@.service").read_text()


@pytest.mark.interop
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in UNITS.iterdir():
        shutil.copy(unit, tmp_path / unit.name)
    shutil.copy(UNITS / "ostiary-renew@.service", tmp_path / "ostiary-renew@laptop.service")
    names = ["ostiary-renew.service", "ostiary-renew.timer", "ostiary-renew@laptop.service"]
    result = subprocess.run(
        [tool, "verify", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr
