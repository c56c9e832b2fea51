"""The pure JWS pieces and the signing-key files, without a server."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ostiary.core.errors import BadRequest, Conflict, MalformedInput, WrongPassword
from ostiary.core.jws import MAX_ASSERTION_LIFETIME, build_client_assertion, sign_digest
from ostiary.core.names import parse_subject
from ostiary.signers.signing_keys import FileSigningKeyStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AUD = "https://login.example.test/t/oauth2/v2.0/token"


def self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = parse_subject("assertion test")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_assertion_times_come_from_now(rsa_key: rsa.RSAPrivateKey) -> None:
    built = build_client_assertion(
        rsa_key, self_signed(rsa_key), client_id="c", audience=AUD, now=NOW,
        lifetime=MAX_ASSERTION_LIFETIME, jti="fixed-jti-for-the-test",
    )  # fmt: skip
    claims = jwt.decode(
        built.token,
        key=rsa_key.public_key(),
        algorithms=["PS256"],
        audience=AUD,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert claims == {
        "aud": AUD,
        "iss": "c",
        "sub": "c",
        "jti": "fixed-jti-for-the-test",
        "nbf": int(NOW.timestamp()),
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 600,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"lifetime": timedelta(seconds=601)}, "601 s", id="fail/lifetime-601s"),
        pytest.param({"lifetime": timedelta(0)}, "0 s", id="fail/lifetime-zero"),
        pytest.param({"alg": "ES256"}, "RSA", id="fail/es256-on-rsa"),
        pytest.param({"alg": "HS256"}, "not supported", id="fail/hs256"),
        pytest.param({"alg": "none"}, "not supported", id="fail/none"),
        pytest.param({"thumbprint": "kid"}, "x5t", id="fail/thumbprint"),
    ],
)
def test_assertion_refusals(
    rsa_key: rsa.RSAPrivateKey, options: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        build_client_assertion(
            rsa_key, self_signed(rsa_key), client_id="c", audience=AUD, now=NOW,
            **options,  # type: ignore[arg-type]
        )  # fmt: skip


def test_es384_does_not_fit_a_p256_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(BadRequest, match="curve"):
        sign_digest(key, "ES384", b"\0" * 48)


def test_key_files_are_encrypted_0600_and_reopen_only_with_the_password(tmp_path: Path) -> None:
    store = FileSigningKeyStore(tmp_path, b"the ca password")
    reference, key = store.create("billing", 1, "p256")
    path = tmp_path / reference
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    reopened = FileSigningKeyStore(tmp_path, b"the ca password").load(reference)
    assert reopened.public_key() == key.public_key()
    with pytest.raises(WrongPassword):
        FileSigningKeyStore(tmp_path, b"another password").load(reference)
    with pytest.raises(Conflict):
        store.create("billing", 1, "p256")  # never overwritten
    for bad in ("../outside.key", "/etc/passwd", "secrets/other/x.key"):
        with pytest.raises(MalformedInput):
            store.load(bad)
    assert "password" not in repr(store)
