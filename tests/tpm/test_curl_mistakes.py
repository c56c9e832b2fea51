"""docs/tpm.md's table of what curl prints for each mistake with a TPM key, made on swtpm.

curl says "unable to set private key file" for most of them. The table quotes, per mistake,
curl's error, the line printed before it, and what ``openssl s_client`` adds; this test makes
each mistake and checks every quoted message, so the table says what curl and openssl print
here. The table and the mistakes below must name the same rows.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.client.tpm import create_tpm_key, open_tpm
from ostiary.core.errors import WrongPassword
from tests.conftest import require_tool
from tests.gateway.conftest import free_port, wait_for_port
from tests.tpm.conftest import OPENSSL_TPM2_CONFIG, PIN, BrokeredTPM, SoftwareTPM

DOC = Path(__file__).parents[2] / "docs" / "tpm.md"
HEADING = '### When curl says "unable to set private key file"'
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Row:
    """One row of the table: the quoted messages of each column."""

    mistake: str
    curl_error: tuple[str, ...]
    before: tuple[str, ...]
    s_client: tuple[str, ...]
    nothing_before: bool


def documented_rows() -> dict[str, Row]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADING)
    rows: dict[str, Row] = {}
    for line in _table_after(lines, start)[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == 4, line
        mistake, error, before, added = cells
        rows[mistake] = Row(
            mistake,
            tuple(_CODE.findall(error)),
            tuple(_CODE.findall(before)),
            tuple(_CODE.findall(added)),
            before == "nothing",
        )
    return rows


def _table_after(lines: list[str], start: int) -> list[str]:
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[first:end]


@dataclass
class Setup:
    """A working client (TPM key with PIN, its certificate, the provider configuration) and
    a TLS server that asks for a client certificate."""

    folder: Path
    brokered: BrokeredTPM
    port: int
    cert: Path
    key: Path

    def env(self, **changes: str | None) -> dict[str, str]:
        env = {
            **os.environ,
            "OPENSSL_CONF": str(self.folder / "tpm2.cnf"),
            "TPM2OPENSSL_TCTI": self.brokered.tcti,
            "DBUS_SESSION_BUS_ADDRESS": self.brokered.bus_address,
        }
        env.pop("TSS2_LOG", None)  # the TSS's default log level, as a user has it
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env


@dataclass
class Attempt:
    """What differs from a working client in one mistake."""

    env: dict[str, str | None] = field(default_factory=dict)
    cert: Path | None = None
    key: Path | None = None
    passphrase: str | None = PIN.decode()


def _self_signed(folder: Path, name: str, tpm_key: Path | None = None, tcti: str = "") -> Path:
    """``name.crt`` by ``openssl req -x509``: for the TPM key at ``tpm_key`` (signed in the
    TPM by the tpm2 provider), else for a new software key ``name.key``."""
    openssl = require_tool("openssl")
    crt = folder / f"{name}.crt"
    command = [openssl, "req", "-x509", "-subj", f"/CN={name}", "-days", "1", "-out", str(crt)]
    if tpm_key is None:
        command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc",
                    "-keyout", str(folder / f"{name}.key")]  # fmt: skip
    else:
        command += ["-provider", "tpm2", "-provider", "default", "-key", str(tpm_key),
                    "-passin", f"pass:{PIN.decode()}"]  # fmt: skip
    env = {**os.environ, "TPM2OPENSSL_TCTI": tcti}
    subprocess.run(command, env=env, capture_output=True, check=True, timeout=60)
    return crt


@pytest.fixture
def setup(brokered_tpm: BrokeredTPM, tmp_path: Path) -> Iterator[Setup]:
    openssl = require_tool("openssl")
    require_tool("curl")
    (tmp_path / "tpm2.cnf").write_text(OPENSSL_TPM2_CONFIG)
    key_file = tmp_path / "dev.key"
    key_file.write_bytes(create_tpm_key(tcti=brokered_tpm.tcti, pin=PIN).to_pem())
    cert_file = _self_signed(tmp_path, "dev", key_file, brokered_tpm.tcti)
    _self_signed(tmp_path, "server")
    port = free_port()
    server = subprocess.Popen(
        [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-www", "-verify", "1",
         "-cert", str(tmp_path / "server.crt"), "-key", str(tmp_path / "server.key")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield Setup(tmp_path, brokered_tpm, port, cert_file, key_file)
    finally:
        server.terminate()
        server.wait(10)
        _clear_lockout(brokered_tpm)


def _clear_lockout(brokered: BrokeredTPM) -> None:
    from tpm2_pytss import ESYS_TR

    with open_tpm(brokered.tcti) as context:
        context.dictionary_attack_lock_reset(ESYS_TR.RH_LOCKOUT)


def _curl(setup: Setup, attempt: Attempt) -> subprocess.CompletedProcess[str]:
    command = ["curl", "-sS", "-k", "-o", os.devnull, "-w", "%{http_code}",
               "--cert", str(attempt.cert or setup.cert), "--key", str(attempt.key or setup.key),
               f"https://127.0.0.1:{setup.port}/"]  # fmt: skip
    if attempt.passphrase is not None:
        command[1:1] = ["--pass", attempt.passphrase]
    return subprocess.run(
        command, env=setup.env(**attempt.env), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _s_client(setup: Setup, attempt: Attempt) -> str:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{setup.port}",
               "-cert", str(attempt.cert or setup.cert),
               "-key", str(attempt.key or setup.key)]  # fmt: skip
    if attempt.passphrase is not None:
        command += ["-pass", f"pass:{attempt.passphrase}"]
    result = subprocess.run(
        command, env=setup.env(**attempt.env), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return result.stdout + result.stderr


# Each mistake: what it changes from the working setup (some change the TPM first, or need
# another swtpm: the fixtures are asked for by name).
Mistake = Callable[[Setup, pytest.FixtureRequest], Attempt]


def _tcti(tcti: str) -> Mistake:
    return lambda setup, request: Attempt(env={"TPM2OPENSSL_TCTI": tcti})


def _never_started(setup: Setup, request: pytest.FixtureRequest) -> Attempt:
    unstarted: SoftwareTPM = request.getfixturevalue("unstarted_tpm")
    return Attempt(env={"TPM2OPENSSL_TCTI": unstarted.tcti})


def _other_tpms_key(setup: Setup, request: pytest.FixtureRequest) -> Attempt:
    other: SoftwareTPM = request.getfixturevalue("swtpm")
    key_file = setup.folder / "other.key"
    key_file.write_bytes(create_tpm_key(tcti=other.tcti, pin=PIN).to_pem())
    return Attempt(cert=_self_signed(setup.folder, "other", key_file, other.tcti), key=key_file)


def _not_the_certificates_key(setup: Setup, request: pytest.FixtureRequest) -> Attempt:
    return Attempt(cert=_self_signed(setup.folder, "software"))


def _locked_out(setup: Setup, request: pytest.FixtureRequest) -> Attempt:
    from ostiary.client.tpm import TpmLockout, load_tpm_key_pem

    wrong = load_tpm_key_pem(setup.key.read_bytes(), tcti=setup.brokered.tcti, pin=b"0000")
    for _try in range(10):
        try:
            wrong.sign(b"x", ec.ECDSA(hashes.SHA256()))
        except WrongPassword:
            continue
        except TpmLockout:
            return Attempt()
    pytest.fail("the TPM never locked out")


MISTAKES: dict[str, Mistake] = {
    "the tpm2 provider is not loaded (no `OPENSSL_CONF`)": (
        lambda setup, request: Attempt(env={"OPENSSL_CONF": None})
    ),
    "the key file does not exist": (
        lambda setup, request: Attempt(key=setup.folder / "nosuch.key")
    ),
    "the key is not the certificate's": _not_the_certificates_key,
    "no `--pass` (curl run by a script)": lambda setup, request: Attempt(passphrase=None),
    "a misspelt TCTI name (`swtmp:`)": _tcti("swtmp:host=127.0.0.1,port=1"),
    "nothing listening at the swtpm address": _tcti("swtpm:host=127.0.0.1,port=1"),
    "no such TPM device": _tcti("device:/dev/no-such-tpm"),
    "tpm2-abrmd not on this D-Bus": _tcti("tabrmd:bus_name=com.example.nobody,bus_type=session"),
    "the TPM was never started": _never_started,
    "the key was made in another TPM": _other_tpms_key,
    "a wrong PIN": lambda setup, request: Attempt(passphrase="0000"),
    "the TPM is in lockout": _locked_out,
}


def test_the_table_names_exactly_the_mistakes_made_here() -> None:
    assert set(documented_rows()) == set(MISTAKES)


def test_the_working_setup_gets_through(setup: Setup) -> None:
    """The twin of every row: with nothing wrong, curl completes the handshake."""
    result = _curl(setup, Attempt())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200"


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_curl_and_openssl_print_what_the_table_says(
    mistake: str, setup: Setup, request: pytest.FixtureRequest
) -> None:
    row = documented_rows()[mistake]
    attempt = MISTAKES[mistake](setup, request)
    result = _curl(setup, attempt)
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    for quoted in row.curl_error:
        assert quoted in lines[-1], (quoted, result.stderr)
    for quoted in row.before:
        assert quoted in "\n".join(lines[:-1]), (quoted, result.stderr)
    if row.nothing_before:
        assert len(lines) == 1, result.stderr
    if row.s_client:
        said = _s_client(setup, attempt)
        for quoted in row.s_client:
            assert quoted in said, (quoted, said)
