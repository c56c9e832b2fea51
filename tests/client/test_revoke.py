"""``ostiary cert revoke``: by the holder (mTLS or token) or with an admin token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ostiary.core.encoding import load_certificate_chain
from tests.client.conftest import RunningCA, ok, refused

Enroll = Callable[..., tuple[Path, Path]]


def _serial_hex(crt: Path) -> str:
    return f"{load_certificate_chain(crt.read_bytes())[0].serial_number:x}"


@pytest.mark.parametrize("proof", [[], ["--holder-token"]], ids=["mtls", "holder-token"])
def test_holder_revokes_its_own_certificate(enroll: Enroll, proof: list[str]) -> None:
    crt, key = enroll("holder", not_after="2h")
    result = ok("cert", "revoke", "--cert", crt, "--key", key, "--reason", "key-compromise", *proof)
    assert f"Revoked serial {_serial_hex(crt)}, reason keyCompromise" in result.stderr
    again = refused("cert", "revoke", "--cert", crt, "--key", key, *proof)
    assert "revoked" in again.stderr


def test_holder_may_not_revoke_another_serial(enroll: Enroll) -> None:
    crt, key = enroll("mine", not_after="2h")
    other, _ = enroll("theirs", not_after="2h")
    result = refused("cert", "revoke", _serial_hex(other), "--cert", crt, "--key", key)
    assert "is not the serial of --cert" in result.stderr


def test_holder_may_not_state_a_ca_reason(enroll: Enroll) -> None:
    crt, key = enroll("modest", not_after="2h")
    result = refused("cert", "revoke", "--cert", crt, "--key", key, "--reason", "cACompromise")
    assert "may not state the reason" in result.stderr


def test_admin_token_revokes_any_serial(bootstrapped: RunningCA, enroll: Enroll) -> None:
    crt, key = enroll("employee", not_after="2h")
    ok(
        "cert",
        "revoke",
        _serial_hex(crt),
        "--token",
        bootstrapped.admin_token(),
        "--reason",
        "superseded",
    )
    refused("cert", "renew", crt, key, "--force")


def test_a_sign_token_is_not_an_admin_token(bootstrapped: RunningCA, enroll: Enroll) -> None:
    crt, key = enroll("kept", not_after="2h")
    refused("cert", "revoke", _serial_hex(crt), "--token", bootstrapped.token("kept"))
    ok("cert", "renew", crt, key, "--force")  # still valid


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="fail/no-credential"),
        pytest.param(["--cert", "x.crt"], id="fail/cert-without-key"),
        pytest.param(["--cert", "x.crt", "--key", "x.key", "--token", "t"], id="fail/both"),
        pytest.param(["--token", "t"], id="fail/admin-without-serial"),
    ],
)
def test_revoke_needs_exactly_one_credential(bootstrapped: RunningCA, args: list[str]) -> None:
    refused("cert", "revoke", *args)
