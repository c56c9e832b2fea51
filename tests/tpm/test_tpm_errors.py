"""TPM setup mistakes give one line that says what to check, and no TSS log on the terminal."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.conftest import refused
from tests.tpm.conftest import SoftwareTPM, _free_port_pair, _listens, _stop, _wait_for


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


@pytest.fixture
def unstarted_tpm(tmp_path: Path) -> Iterator[SoftwareTPM]:
    """swtpm powered on but never sent TPM2_Startup (no startup-clear flag)."""
    port = _free_port_pair()
    log = tmp_path / "swtpm.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tmp_path}",
             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
             "--flags", "not-need-init"],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
    _wait_for(lambda: _listens(port), process, log, "swtpm")
    try:
        yield SoftwareTPM(port, tmp_path, process)
    finally:
        _stop(process)


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
