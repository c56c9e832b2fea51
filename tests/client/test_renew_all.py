"""``ostiary cert renew-all DIR``: the cron job of USERS.md situation 1, against the real CA."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12

from ostiary.core.encoding import load_certificate_chain
from tests.client.conftest import RunningCA, run_cli

Enroll = Callable[..., tuple[Path, Path]]
_TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def _serial(crt: Path) -> int:
    return load_certificate_chain(crt.read_bytes())[0].serial_number


def _p12_serial(p12: Path) -> int:
    bundle = pkcs12.load_pkcs12(p12.read_bytes(), None)
    assert bundle.cert is not None
    return bundle.cert.certificate.serial_number


def test_renew_all_renews_only_what_is_due_and_refreshes_p12(
    bootstrapped: RunningCA, enroll: Enroll, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    due_crt, _ = enroll("due", folder=certs)
    fresh_crt, _ = enroll("fresh", folder=certs, not_after="2h")
    shutil.copy(bootstrapped.root_file, certs / "root.crt")  # no key beside it: skipped
    due_serial, fresh_serial = _serial(due_crt), _serial(fresh_crt)
    hooks = tmp_path / "hooks.log"

    result = run_cli(
        "cert", "renew-all", certs, "--p12", "--exec", f'echo "$OSTIARY_CRT" >> {hooks}'
    )

    assert result.exit_code == 0, result.stderr
    assert _serial(due_crt) != due_serial
    assert _serial(fresh_crt) == fresh_serial
    assert _p12_serial(certs / "due.p12") == _serial(due_crt)
    assert _p12_serial(certs / "fresh.p12") == fresh_serial  # written: it was missing
    assert not (certs / "root.p12").exists()
    assert hooks.read_text().splitlines() == [str(due_crt)]
    lines = result.stderr.strip().splitlines()
    assert all(_TIMESTAMPED.match(line) for line in lines), result.stderr
    assert "root.crt: skipped, no root.key beside it" in result.stderr
    assert "fresh.crt: not due until" in result.stderr
    assert lines[-1].endswith("1 renewed, 1 not due, 0 failed")


def test_one_failure_does_not_stop_the_others_and_sets_the_exit_status(
    bootstrapped: RunningCA, enroll: Enroll, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    first, _ = enroll("a-first", folder=certs)
    _, other_key = enroll("b-other", folder=tmp_path)
    broken_crt, _ = enroll("b-broken", folder=certs)
    shutil.copy(other_key, certs / "b-broken.key")  # a key that is not this certificate's
    last, _ = enroll("c-last", folder=certs)
    serials = {p: _serial(p) for p in (first, broken_crt, last)}

    result = run_cli("cert", "renew-all", certs)

    assert result.exit_code == 1, result.stderr
    assert _serial(first) != serials[first]
    assert _serial(last) != serials[last]
    assert _serial(broken_crt) == serials[broken_crt]
    assert "b-broken.crt: failed:" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("2 renewed, 0 not due, 1 failed")


def test_a_p12_newer_than_its_certificate_is_left_alone(
    bootstrapped: RunningCA, enroll: Enroll, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    enroll("steady", folder=certs, not_after="2h")
    assert run_cli("cert", "renew-all", certs, "--p12").exit_code == 0
    written = (certs / "steady.p12").stat().st_mtime_ns
    result = run_cli("cert", "renew-all", certs, "--p12")
    assert result.exit_code == 0
    assert (certs / "steady.p12").stat().st_mtime_ns == written
    assert "wrote" not in result.stderr
