"""``ostiary cert needs-renewal``: 0 needs renewal, 1 does not, 2 usage, 3 unreadable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.client.conftest import run_cli
from tests.conftest import TestCA, make_test_ca


@pytest.fixture(scope="module")
def test_ca() -> TestCA:
    """A CA made a month ago, so that certificates can be backdated by days."""
    return make_test_ca(now=datetime.now(UTC) - timedelta(days=30))


def _write(test_ca: TestCA, path: Path, *, age: timedelta, lifetime: timedelta) -> Path:
    certificate, _ = test_ca.issue(now=datetime.now(UTC) - age, lifetime=lifetime)
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("age", "options", "code"),
    [
        pytest.param(timedelta(days=1), [], 1, id="young/not-due"),
        pytest.param(timedelta(days=6), [], 0, id="old/due"),
        pytest.param(timedelta(days=1), ["--expires-in", "7d"], 0, id="expires-in/long/due"),
        pytest.param(timedelta(days=1), ["--expires-in", "1d"], 1, id="expires-in/short/not-due"),
        pytest.param(timedelta(days=1), ["--expires-in", "90%"], 0, id="expires-in/90%/due"),
        pytest.param(timedelta(days=1), ["--expires-in", "10%"], 1, id="expires-in/10%/not-due"),
        pytest.param(timedelta(days=8), [], 0, id="expired/due"),
    ],
)
def test_exit_status_says_whether_renewal_is_needed(
    test_ca: TestCA, tmp_path: Path, age: timedelta, options: list[str], code: int
) -> None:
    crt = _write(test_ca, tmp_path / "a.crt", age=age, lifetime=timedelta(days=7))
    result = run_cli("cert", "needs-renewal", crt, *options)
    assert result.exit_code == code, result.stderr


def test_errors_exit_with_two_or_more(test_ca: TestCA, tmp_path: Path) -> None:
    crt = _write(test_ca, tmp_path / "a.crt", age=timedelta(days=1), lifetime=timedelta(days=7))
    (tmp_path / "garbage.crt").write_text("not a certificate")
    assert run_cli("cert", "needs-renewal", tmp_path / "missing.crt").exit_code == 3
    assert run_cli("cert", "needs-renewal", tmp_path / "garbage.crt").exit_code == 3
    assert run_cli("cert", "needs-renewal", crt, "--expires-in", "soon").exit_code == 3
    assert run_cli("cert", "needs-renewal", crt, "--no-such-option").exit_code == 2
    assert run_cli("cert", "needs-renewal").exit_code == 2


def test_help_states_the_exit_codes() -> None:
    result = run_cli("cert", "needs-renewal", "--help")
    assert "Exit 0 if CRT needs renewal, 1 if it does not" in " ".join(result.stdout.split())
