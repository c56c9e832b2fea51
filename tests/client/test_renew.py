"""``ostiary cert renew`` (one shot) against the real CA: mTLS, token, rekey, .p12, --exec."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from ostiary.cli.cert import dump_private_key, load_private_key_file
from ostiary.core.encoding import dump_certificate_chain_pem, load_certificate_chain
from tests.client.conftest import RunningCA, ok, refused
from tests.conftest import make_test_ca

Enroll = Callable[..., tuple[Path, Path]]


def _serial(crt: Path) -> int:
    return load_certificate_chain(crt.read_bytes())[0].serial_number


def test_a_certificate_that_is_not_due_is_left_alone(enroll: Enroll) -> None:
    crt, key = enroll("fresh", not_after="2h")
    before = crt.read_bytes()
    result = ok("cert", "renew", crt, key)
    assert "not due for renewal until" in result.stderr
    assert crt.read_bytes() == before


@pytest.mark.parametrize("via", ["--mtls", "--token"])
def test_a_due_certificate_is_renewed_and_keeps_its_key(enroll: Enroll, via: str) -> None:
    crt, key = enroll("due")  # 20 s + 1 min backdate: past two thirds at once
    old_serial, old_key = _serial(crt), key.read_bytes()
    result = ok("cert", "renew", crt, key, via)
    assert f"via {via.removeprefix('--')}" in result.stderr
    assert _serial(crt) != old_serial
    assert key.read_bytes() == old_key
    chain = load_certificate_chain(crt.read_bytes())
    assert chain[0].public_key() == load_private_key_file(key).public_key()
    assert len(chain) == 2


def test_force_renews_a_certificate_that_is_not_due(enroll: Enroll) -> None:
    crt, key = enroll("forced", not_after="2h")
    old = _serial(crt)
    ok("cert", "renew", crt, key, "--force")
    assert _serial(crt) != old


def test_expires_in_decides_what_is_due(enroll: Enroll) -> None:
    crt, key = enroll("window", not_after="2h")
    old = _serial(crt)
    ok("cert", "renew", crt, key, "--expires-in", "1h")
    assert _serial(crt) == old
    ok("cert", "renew", crt, key, "--expires-in", "3h")
    assert _serial(crt) != old


def test_rekey_replaces_the_key_too(enroll: Enroll) -> None:
    crt, key = enroll("rekeyed")
    old_key = load_private_key_file(key)
    ok("cert", "renew", crt, key, "--force", "--rekey")
    new_key = load_private_key_file(key)
    assert new_key.public_key() != old_key.public_key()
    assert load_certificate_chain(crt.read_bytes())[0].public_key() == new_key.public_key()


def test_renewal_writes_the_p12_and_runs_exec(enroll: Enroll, tmp_path: Path) -> None:
    crt, key = enroll("bundled")
    p12, marker = tmp_path / "bundled.p12", tmp_path / "hook.out"
    password = tmp_path / "p12-password"
    password.write_text("p12 secret\n")
    ok(
        "cert",
        "renew",
        crt,
        key,
        "--p12",
        p12,
        "--password-file",
        password,
        "--exec",
        f'echo "$OSTIARY_SERIAL $OSTIARY_CRT" > {marker}',
    )
    bundle = pkcs12.load_pkcs12(p12.read_bytes(), b"p12 secret")
    assert bundle.cert is not None
    assert bundle.cert.certificate.serial_number == _serial(crt)
    assert marker.read_text().split() == [f"{_serial(crt):x}", str(crt)]


def test_a_failing_exec_is_logged_not_fatal(enroll: Enroll) -> None:
    crt, key = enroll("hooked")
    old = _serial(crt)
    result = ok("cert", "renew", crt, key, "--exec", "exit 7")
    assert "--exec command failed with exit status 7" in result.stderr
    assert _serial(crt) != old


def test_a_key_that_does_not_match_is_refused_before_asking_the_ca(enroll: Enroll) -> None:
    crt, _ = enroll("one", not_after="2h")
    _, other_key = enroll("two", not_after="2h")
    before = crt.read_bytes()
    result = refused("cert", "renew", crt, other_key, "--force")
    assert "is not the key" in result.stderr
    assert crt.read_bytes() == before


def test_a_revoked_certificate_is_not_renewed(enroll: Enroll) -> None:
    crt, key = enroll("gone", not_after="2h")
    ok("cert", "revoke", "--cert", crt, "--key", key)
    before = crt.read_bytes()
    result = refused("cert", "renew", crt, key, "--force")
    assert "revoked" in result.stderr
    assert crt.read_bytes() == before


def test_p12_options_without_p12_are_refused(bootstrapped: RunningCA, enroll: Enroll) -> None:
    crt, key = enroll("lonely", not_after="2h")
    refused("cert", "renew", crt, key, "--compat")


@pytest.mark.parametrize("via", ["--mtls", "--token"])
def test_a_certificate_from_another_ca_is_refused_not_retried(
    bootstrapped: RunningCA, tmp_path: Path, via: str
) -> None:
    now = datetime.now(UTC)
    other_ca = make_test_ca(now=now)
    certificate, key = other_ca.issue(now=now)
    crt, key_file = tmp_path / "foreign.crt", tmp_path / "foreign.key"
    crt.write_bytes(dump_certificate_chain_pem([certificate, other_ca.intermediate]))
    key_file.write_bytes(dump_private_key(key, None))
    result = refused("cert", "renew", crt, key_file, "--force", via)
    assert "cannot reach" not in result.stderr
    assert "CA" in result.stderr
