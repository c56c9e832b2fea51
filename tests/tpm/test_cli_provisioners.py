"""``ostiary ca provisioner add --type attest`` and ``--require-attestation``, in-process."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.cli.conftest import CLI, ca_dir, cli, password_file  # noqa: F401 - fixtures
from tests.tpm.conftest import HARDWARE_POLICY, make_attestation_ca


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    path = tmp_path / "attestation-roots.pem"
    path.write_bytes(make_attestation_ca().pem())
    return path


def _provisioners(folder: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(folder / "ostiary.db") as db:
        rows = db.execute("select name, type, config from provisioners").fetchall()
    return {name: (kind, config) for name, kind, config in rows}


def test_attest_provisioner_and_one_that_requires_it(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    roots: Path,
) -> None:
    secret = ["--password-file", password_file]
    attest = ["--type", "attest", "--attestation-roots", roots, "--policy-oid", HARDWARE_POLICY]
    result = cli.ok("ca", "provisioner", "add", "tpm", *attest, *secret)
    said = result.stderr + result.stdout
    assert "Test TPM Attestation CA" in said
    assert "PIN required" not in said  # no TPM attests that a PIN is set
    assert "the client's promise" in said
    cli.ok("ca", "provisioner", "add", "ops", "--require-attestation", "tpm", *secret)
    cli.ok("ca", "provisioner", "add", "desk", "--type", "approval",
           "--require-attestation", "tpm", *secret)  # fmt: skip
    found = _provisioners(ca_dir)
    assert found["tpm"][0] == "attest"
    assert HARDWARE_POLICY in found["tpm"][1]
    assert json.loads(found["ops"][1])["require_attestation"] == "tpm"
    assert found["desk"][0] == "approval"
    assert json.loads(found["desk"][1])["require_attestation"] == "tpm"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--type", "attest", "--policy-oid", HARDWARE_POLICY), id="fail/no-roots"),
        pytest.param(("--type", "attest", "--attestation-roots", "ROOTS"), id="fail/no-oid"),
        pytest.param(
            ("--type", "attest", "--attestation-roots", "ROOTS", "--policy-oid", "not.an.oid"),
            id="fail/bad-oid",
        ),
        pytest.param(("--require-attestation", "nobody"), id="fail/unknown-attest"),
        pytest.param(
            (
                "--type",
                "attest",
                "--attestation-roots",
                "ROOTS",
                "--policy-oid",
                HARDWARE_POLICY,
                "--require-attestation",
                "tpm",
            ),
            id="fail/attest-attested",
        ),
    ],
)
def test_bad_attest_options_are_one_line_and_add_nothing(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    roots: Path,
    args: tuple[str, ...],
) -> None:
    before = _provisioners(ca_dir)
    given = [str(roots) if a == "ROOTS" else a for a in args]
    cli.refused("ca", "provisioner", "add", "x", *given, "--password-file", password_file)
    assert _provisioners(ca_dir) == before
