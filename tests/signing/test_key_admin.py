"""``ca key update`` and ``ca key remove``; ``sign assertion`` with a key that is not the
certificate's; the refused caller told which identities it presented.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from ostiary.store import AuditEntry, AuditLog, CertificateRecord, Store
from tests.cli.conftest import CLI, ca_dir, cli, password_file  # noqa: F401 - fixtures
from tests.signing.conftest import AUDIENCE, CLIENT_ID, SigningRunning

ENTRA = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
OTHER = "https://login.example.test/other/oauth2/v2.0/token"


def _pem_key(key: ec.EllipticCurvePrivateKey | object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_sign_assertion_with_a_key_that_is_not_the_certificates_is_refused_in_one_line(
    cli: CLI,  # noqa: F811
    signing_server: SigningRunning,
    tmp_path: Path,
) -> None:
    identity = signing_server.caller("billing-mismatch")
    crt, key, root = tmp_path / "me.crt", tmp_path / "me.key", tmp_path / "root.crt"
    crt.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in identity.chain))
    root.write_bytes(signing_server.running.root.public_bytes(Encoding.PEM))
    args = ["sign", "assertion", "--key", "billing", "--client-id", CLIENT_ID,
            "--audience", AUDIENCE, "--cert", crt, "--cert-key", key,
            "--ca-url", signing_server.url, "--root", root]  # fmt: skip

    key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    refused = cli.refused(*args)
    assert "is not the key of the certificate" in refused.stderr

    key.write_bytes(_pem_key(identity.private_key))
    assert cli.ok(*args).stdout.count(".") == 2  # a JWT


def test_a_refused_caller_is_told_which_identities_it_presented(
    signing_server: SigningRunning,
) -> None:
    caller = signing_server.caller("reports-app", ("reports.lab.example",))
    body = {"client_id": CLIENT_ID, "audience": AUDIENCE}
    with signing_server.client(caller) as client:
        refused = client.post("/signing/keys/billing/assertion", json=body)
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert "cn:reports-app" in detail and "dns:reports.lab.example" in detail
    assert "serial:" in detail

    allowed = signing_server.caller("billing-allowed")
    with signing_server.client(allowed) as client:
        assert client.post("/signing/keys/billing/assertion", json=body).status_code == 200


def _events(ca_dir: Path) -> list[AuditEntry]:  # noqa: F811
    store = Store.from_url(f"sqlite:///{ca_dir / 'ostiary.db'}")
    try:
        with store.transaction(read_only=True) as session:
            assert AuditLog(session).verify().ok
            entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
            session.expunge_all()
            return entries
    finally:
        store.dispose()


def test_ca_key_update_changes_callers_audiences_and_digests_and_audits_it(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    pw = ["--password-file", password_file]
    cli.ok("ca", "key", "create", "billing", "--audience", ENTRA, "--caller", "cn:old-*",
           "--cert-out", tmp_path / "v1.crt", *pw)  # fmt: skip
    cli.ok("ca", "key", "update", "billing", "--caller", "cn:billing-*", "--caller",
           "uri:spiffe://prod/billing", "--audience", OTHER, "--allow-digest-signing",
           *pw)  # fmt: skip
    listed = cli.ok("ca", "key", "list", *pw).stdout
    assert "callers:   cn:billing-*, uri:spiffe://prod/billing" in listed
    assert f"audiences: {OTHER}" in listed and ENTRA not in listed
    assert "digests:   signed" in listed and "current v1" in listed
    # Only what is given changes.
    cli.ok("ca", "key", "update", "billing", "--no-allow-digest-signing", *pw)
    listed = cli.ok("ca", "key", "list", *pw).stdout
    assert "digests:   refused" in listed and "cn:billing-*" in listed and OTHER in listed
    updates = [e for e in _events(ca_dir) if e.event == "signing_key.updated"]
    assert len(updates) == 2
    assert updates[0].details["before"]["callers"] == ["cn:old-*"]
    assert updates[0].details["after"]["audiences"] == [OTHER]

    # Rejected twins: one line each, nothing changed.
    for args in (
        ["nosuch", "--caller", "cn:x"],
        ["billing"],  # nothing to change
        ["billing", "--audience", "http://plain.example/token"],
        ["billing", "--caller", " "],
        ["Bad Name", "--caller", "cn:x"],
    ):
        cli.refused("ca", "key", "update", *args, *pw)
    assert cli.ok("ca", "key", "list", *pw).stdout == listed
    assert len([e for e in _events(ca_dir) if e.event == "signing_key.updated"]) == 2


def test_ca_key_remove_revokes_its_certificates_and_deletes_its_key_files(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    pw = ["--password-file", password_file]
    cli.ok("ca", "key", "create", "billing", "--audience", ENTRA, "--cert-out",
           tmp_path / "v1.crt", *pw)  # fmt: skip
    cli.ok("ca", "key", "rotate", "billing", "--cert-out", tmp_path / "v2.crt", *pw)
    cli.ok("ca", "key", "create", "edge", "--audience", ENTRA, "--cert-out",
           tmp_path / "edge.crt", *pw)  # fmt: skip
    serials = {
        format(x509.load_pem_x509_certificate(p.read_bytes()).serial_number, "x")
        for p in (tmp_path / "v1.crt", tmp_path / "v2.crt")
    }
    cli.ok("ca", "key", "remove", "billing", *pw)
    listed = cli.ok("ca", "key", "list", *pw).stdout
    assert "billing" not in listed and "edge" in listed
    assert not list((ca_dir / "secrets" / "signing").glob("billing.*"))
    assert list((ca_dir / "secrets" / "signing").glob("edge.*"))
    store = Store.from_url(f"sqlite:///{ca_dir / 'ostiary.db'}")
    try:
        with store.transaction(read_only=True) as session:
            revoked = {
                r.serial: r.revocation_reason
                for r in session.scalars(select(CertificateRecord))
                if r.revoked_at is not None
            }
    finally:
        store.dispose()
    assert set(revoked) == serials
    assert set(revoked.values()) == {"cessationOfOperation"}
    assert [e.event for e in _events(ca_dir)][-1] == "signing_key.removed"

    # Rejected twins: an unknown key, a removed one; nothing else changes.
    cli.refused("ca", "key", "remove", "nosuch", *pw)
    cli.refused("ca", "key", "remove", "billing", *pw)
    assert cli.ok("ca", "key", "list", *pw).stdout == listed
