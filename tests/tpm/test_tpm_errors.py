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
        pytest.param(
            # A path that exists but is no TPM: the branch a device without access takes
            # (as root here, a 0660 device would open).
            "device:/",
            "/ cannot be opened: add your user to the group that owns it (usually 'tss')",
            id="fail/device-not-opened",
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


def test_lockout_recovery_command_works_as_printed_with_the_lockout_password(
    tmp_path: Path,
) -> None:
    """On a TPM whose lockout hierarchy has a password, the printed command plus the ``-p``
    the message asks for clears the lockout (an own swtpm: the password stays with it)."""
    import re
    import shlex

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ostiary.client.tpm import TpmLockout, create_tpm_key, load_tpm_key_pem
    from ostiary.core.errors import WrongPassword
    from tests.tpm.conftest import PIN, _start_swtpm, _stop

    tpm = _start_swtpm(tmp_path)
    try:
        password = "lockout-8472"
        subprocess.run(["tpm2_changeauth", "-T", tpm.tcti, "-c", "lockout", password],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        key = create_tpm_key(tcti=tpm.tcti, pin=PIN)
        wrong = load_tpm_key_pem(key.to_pem(), tcti=tpm.tcti, pin=b"0000")
        refused = 0
        for _ in range(10):
            try:
                wrong.sign(b"x", ec.ECDSA(hashes.SHA256()))
            except WrongPassword:
                refused += 1
            except TpmLockout as exc:
                message = exc.detail
                break
        else:
            pytest.fail("the TPM never locked out")
        # What docs/tpm.md says of swtpm: 3 wrong PINs, then one forgiven every 1000 s.
        assert refused == _property(tpm, "MAX_AUTH_FAIL") == 3
        assert _property(tpm, "LOCKOUT_INTERVAL") == 1000
        assert "add -p LOCKOUT-PASSWORD if the TPM has a lockout password" in message
        printed = re.search(r"tpm2_dictionarylockout -T '[^']+' --clear-lockout", message)
        assert printed is not None, message
        right = load_tpm_key_pem(key.to_pem(), tcti=tpm.tcti, pin=PIN)
        with pytest.raises(TpmLockout):
            right.sign(b"x", ec.ECDSA(hashes.SHA256()))  # every key is locked out
        subprocess.run([*shlex.split(printed.group(0)), "-p", password],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        right.sign(b"x", ec.ECDSA(hashes.SHA256()))
    finally:
        _stop(tpm.process)


def _property(tpm: SoftwareTPM, name: str) -> int:
    from tpm2_pytss import TPM2_CAP, TPM2_PT

    from ostiary.client.tpm import open_tpm

    with open_tpm(tpm.tcti) as context:
        _, data = context.get_capability(TPM2_CAP.TPM_PROPERTIES, getattr(TPM2_PT, name), 1)
        return int(data.data.tpmProperties[0].value)
