"""``ostiary ca key create|list|rotate``, ``ostiary sign assertion`` and the SDK's cache."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from ostiary.authority.signing_keys import rotate_signing_key
from ostiary.client.signing import RemoteAssertion, entra_token_endpoint
from ostiary.core.errors import BadRequest, PolicyDenied
from ostiary.core.jws import b64url
from ostiary.store import AuditEntry, AuditLog, CertificateRecord, Store
from tests.cli.conftest import CLI, ca_dir, cli, password_file  # noqa: F401 - fixtures
from tests.signing.conftest import AUDIENCE, CLIENT_ID, SigningRunning

ENTRA = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"


def test_ca_key_create_list_rotate(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    v1 = tmp_path / "billing-v1.crt"
    created = cli.ok(
        "ca", "key", "create", "billing", "--type", "rsa-3072", "--audience", ENTRA,
        "--caller", "uri:spiffe://prod/billing", "--allow-digest-signing", "--cert-out", v1,
        "--password-file", password_file,
    )  # fmt: skip
    certificate = x509.load_pem_x509_certificate(v1.read_bytes())
    assert certificate.public_key().key_size == 3072  # type: ignore[union-attr]
    der = certificate.public_bytes(Encoding.DER)
    assert b64url(hashlib.sha256(der).digest()) in created.stderr
    key_file = ca_dir / "secrets" / "signing" / "billing.v1.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()

    v2 = tmp_path / "billing-v2.crt"
    cli.ok("ca", "key", "rotate", "billing", "--cert-out", v2, "--password-file", password_file)
    second = x509.load_pem_x509_certificate(v2.read_bytes())
    assert second.public_key() != certificate.public_key()
    listed = cli.ok("ca", "key", "list", "--password-file", password_file).stdout
    assert "billing  rsa-3072  current v2" in listed
    assert ENTRA in listed and "uri:spiffe://prod/billing" in listed
    assert listed.count(" file  serial ") == 2
    assert "digests:   signed" in listed

    # Both certificates are ours: recorded (so revocable), audited, and the chain holds.
    store = Store.from_url(f"sqlite:///{ca_dir / 'ostiary.db'}")
    try:
        with store.transaction(read_only=True) as session:
            serials = set(session.scalars(select(CertificateRecord.serial)))
            events = list(session.scalars(select(AuditEntry.event)))
            assert AuditLog(session).verify().ok
    finally:
        store.dispose()
    assert {format(c.serial_number, "x") for c in (certificate, second)} <= serials
    assert "signing_key.created" in events and "signing_key.rotated" in events

    # Rejected twins: one readable line, nothing made.
    for args in (
        ["create", "billing", "--audience", ENTRA],  # exists
        ["create", "other", "--type", "rsa-1024", "--audience", ENTRA],
        ["create", "other"],  # no audience
        ["create", "other", "--audience", "http://plain.example/token"],
        ["create", "Bad Name", "--audience", ENTRA],
        ["create", "other", "--audience", ENTRA, "--kms", "pkcs11"],
        ["rotate", "nosuch"],
        ["create", "other", "--audience", ENTRA, "--lifetime", "30m"],  # refused by issuance
    ):
        out = tmp_path / "refused.crt"
        cli.refused("ca", "key", *args, "--cert-out", out, "--password-file", password_file)
        assert not out.exists()
    assert not (ca_dir / "secrets" / "signing" / "other.v1.key").exists()
    # ...so the name is still free.
    cli.ok(
        "ca", "key", "create", "other", "--audience", ENTRA, "--cert-out", tmp_path / "o.crt",
        "--password-file", password_file,
    )  # fmt: skip


def test_sign_assertion_command_with_a_client_certificate_and_with_a_token(
    cli: CLI,  # noqa: F811
    signing_server: SigningRunning,
    tmp_path: Path,
) -> None:
    identity = signing_server.caller("billing-cli")
    crt, key, root = tmp_path / "me.crt", tmp_path / "me.key", tmp_path / "root.crt"
    crt.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in identity.chain))
    key.write_bytes(
        identity.private_key.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    root.write_bytes(signing_server.running.root.public_bytes(Encoding.PEM))
    where = ["--ca-url", signing_server.url, "--root", root]
    # The test server's key allows AUDIENCE, which is a tenant-less URL: use --audience.
    printed = cli.ok(
        "sign", "assertion", "--key", "billing", "--client-id", CLIENT_ID,
        "--audience", AUDIENCE, "--cert", crt, "--cert-key", key, *where,
    ).stdout.strip()  # fmt: skip
    claims = jwt.decode(
        printed,
        key=signing_server.certificates["billing"].public_key(),
        algorithms=["PS256"],
        audience=AUDIENCE,
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID

    token = signing_server.running.admin_token()
    by_token = cli.ok(
        "sign", "assertion", "--key", "billing", "--client-id", CLIENT_ID,
        "--audience", AUDIENCE, "--token", token, *where,
    ).stdout.strip()  # fmt: skip
    assert jwt.decode(by_token, options={"verify_signature": False})["aud"] == AUDIENCE

    # --tenant means Entra's endpoint, which this key does not allow: refused by the CA.
    refused = cli.refused(
        "sign", "assertion", "--key", "billing", "--client-id", CLIENT_ID,
        "--tenant", "contoso.onmicrosoft.com", "--cert", crt, "--cert-key", key, *where,
    )  # fmt: skip
    assert "audience" in refused.stderr
    cli.refused("sign", "assertion", "--key", "billing", "--client-id", CLIENT_ID, *where)
    cli.refused(
        "sign", "assertion", "--key", "billing", "--client-id", CLIENT_ID, "--tenant", "t",
        "--audience", AUDIENCE, "--token", token, *where,
    )  # fmt: skip
    cli.refused(
        "sign", "assertion", "--key", "billing", "--client-id", CLIENT_ID, "--audience",
        AUDIENCE, "--token", "not-a-jwt", *where,
    )  # fmt: skip


def test_entra_audience_from_tenant() -> None:
    assert entra_token_endpoint("contoso.onmicrosoft.com") == ENTRA
    with pytest.raises(BadRequest):
        entra_token_endpoint("../evil")


def test_sdk_caches_assertions_until_shortly_before_expiry(
    signing_server: SigningRunning,
) -> None:
    identity = signing_server.caller("billing-sdk")
    now = [datetime.now(UTC)]
    with RemoteAssertion(
        signing_server.url,
        [signing_server.running.root],
        key="billing",
        client_id=CLIENT_ID,
        audience=AUDIENCE,
        identity=identity,
        lifetime=timedelta(minutes=5),
        clock=lambda: now[0],
    ) as source:
        first = source()
        assert source() == first  # cached
        now[0] += timedelta(minutes=3, seconds=59)
        assert source() == first  # still more than a minute left
        now[0] += timedelta(seconds=2)
        second = source()
        assert second != first  # within the last minute: a fresh one
        jti = [jwt.decode(t, options={"verify_signature": False})["jti"] for t in (first, second)]
        assert jti[0] != jti[1]
        kid, signature = source.sign_digest("RS256", hashlib.sha256(b"x").digest())
        assert kid == "billing.v1" and len(signature) == 256
    with (
        RemoteAssertion(
            signing_server.url,
            [signing_server.running.root],
            key="billing",
            client_id=CLIENT_ID,
            audience="https://elsewhere.example/token",
            identity=identity,
        ) as wrong,
        pytest.raises(PolicyDenied),
    ):
        wrong()


def test_rotation_switches_signing_to_the_new_version(signing_server: SigningRunning) -> None:
    """Run last in this module: ``edge`` moves to v2 (the other tests use ``billing`` v1 and
    ``edge`` only through the module's first version)."""
    identity = signing_server.caller("edge-rotate", ("uri:spiffe://lab/edge",))
    version, certificate = rotate_signing_key(
        signing_server.authority, signing_server.signing.key_store, "edge", actor="test"
    )
    assert version.version == 2
    with signing_server.client(identity) as client:
        answer = client.post(
            "/signing/keys/edge/assertion", json={"client_id": CLIENT_ID, "audience": AUDIENCE}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["kid"] == "edge.v2"
    token = answer.json()["assertion"]
    header = jwt.get_unverified_header(token)
    assert header["x5t#S256"] == b64url(
        hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    )
    jwt.decode(token, key=certificate.public_key(), algorithms=["ES256"], audience=AUDIENCE)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token,
            key=signing_server.certificates["edge"].public_key(),
            algorithms=["ES256"],
            audience=AUDIENCE,
        )
    signing_server.certificates["edge"] = certificate
