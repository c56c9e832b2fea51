"""TPM setup mistakes give one line that says what to check, and no TSS log on the terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.client.conftest import refused
from tests.tpm.conftest import SoftwareTPM


def _one_line(result_stderr: str) -> str:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1, result_stderr  # no "ERROR:tcti:..." around it
    return lines[0]


@pytest.mark.parametrize(
    ("tcti", "said"),
    [
        pytest.param("swtmp:host=127.0.0.1,port=2321", "unknown TCTI 'swtmp'", id="fail/typo"),
        pytest.param("swtpm:host=127.0.0.1,port=abc", "malformed TCTI", id="fail/malformed"),
        pytest.param(
            "swtpm:host=127.0.0.1,port=1",
            "nothing is listening at 127.0.0.1:1",
            id="fail/nothing-listening",
        ),
        pytest.param(
            "tabrmd:bus_name=com.example.nobody,bus_type=session",
            "tpm2-abrmd does not answer",
            id="fail/no-abrmd",
        ),
        pytest.param(
            "device:/dev/no-such-tpm", "/dev/no-such-tpm does not exist", id="fail/no-device"
        ),
    ],
)
def test_tcti_mistakes_are_one_line_saying_what_to_check(
    tcti: str, said: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ak.pem"
    result = refused("tpm", "ak", "create", "--out", out, "--tcti", tcti)
    assert said in _one_line(result.stderr)
    assert not out.exists()
    assert "ERROR:" not in capfd.readouterr().err  # the TSS's own log stays quiet


def test_tpm_never_started_says_to_run_tpm2_startup(
    unstarted_tpm: SoftwareTPM, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ak.pem"
    result = refused("tpm", "ak", "create", "--out", out, "--tcti", unstarted_tpm.tcti)
    line = _one_line(result.stderr)
    assert f"tpm2_startup -c -T '{unstarted_tpm.tcti}'" in line
    assert "Traceback" not in capfd.readouterr().err
    # The command works as printed; then the same request succeeds.
    command = line.split("start it with: ")[1]
    subprocess.run(command.replace("'", "").split(), check=True, capture_output=True, timeout=30)
    from tests.client.conftest import ok

    ok("tpm", "ak", "create", "--out", out, "--tcti", unstarted_tpm.tcti)
