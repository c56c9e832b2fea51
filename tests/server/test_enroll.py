"""Sign, renew and revoke over HTTPS: by token, by mTLS, by holder token, by admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import select

from ostiary.authority.authority import Authority
from ostiary.core.issuance import Authorization
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject
from ostiary.store import AuditEntry, AuditLog, CertificateRepository, CertificateStatus
from ostiary.tls import TLSIdentity
from tests.server.conftest import OPS, Running, identity_of, make_csr


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def events(running: Running, event: str) -> list[AuditEntry]:
    with running.authority.store.transaction(read_only=True) as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.event == event)))


def status_of(running: Running, certificate: x509.Certificate) -> str:
    with running.authority.store.transaction(read_only=True) as session:
        return CertificateRepository(session).get(certificate.serial_number).status


def issued_at(running: Running, when: datetime, lifetime: timedelta) -> TLSIdentity:
    """A certificate from provisioner 'ops' issued at ``when`` (the past, for expiry tests)."""
    authority = running.authority
    past = Authority(authority.ca, authority.store, clock=lambda: when)
    csr, key = make_csr("old@example.com", ["old@example.com"])
    certificate = past.issue(
        x509.load_pem_x509_csr(csr.encode()),
        Authorization(
            subject=parse_subject("old@example.com"),
            names=(parse_san("old@example.com"),),
            lifetime=Lifetime(lifetime, lifetime, lifetime),
            provisioner=OPS,
        ),
        actor="test",
    )
    return TLSIdentity((certificate, authority.ca.intermediate), key)


def test_sign_issues_records_and_points_at_the_server(running: Running) -> None:
    csr, key = make_csr("alice@example.com", ["alice@example.com"])
    token = running.sign_token("alice@example.com", ["alice@example.com"])
    with running.client() as client:
        answer = client.post("/sign", json={"csr": csr, "token": token, "not_after": "2h"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    alice = identity_of(body, key)
    certificate = alice.certificate
    assert body["serial_number"] == f"{certificate.serial_number:x}"
    assert [c for c in alice.chain[1:]] == [running.authority.ca.intermediate]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(hours=2) <= lifetime <= timedelta(hours=2, minutes=2)
    base = running.server.http_url
    cdp = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == f"{base}/crl"
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = {d.access_method: d.access_location.value for d in aia}
    assert urls[AuthorityInformationAccessOID.OCSP] == f"{base}/ocsp"
    assert urls[AuthorityInformationAccessOID.CA_ISSUERS] == f"{base}/intermediate.crt"
    assert status_of(running, certificate) == CertificateStatus.VALID
    with running.authority.store.transaction(read_only=True) as session:
        assert AuditLog(session).verify().ok


def test_a_token_is_accepted_once(running: Running) -> None:
    csr, _ = make_csr()
    token = running.sign_token()
    with running.client() as client:
        assert client.post("/sign", json={"csr": csr, "token": token}).status_code == 201
        before = running.counts()
        replay = client.post("/sign", json={"csr": csr, "token": token})
    assert replay.status_code == 409
    assert replay.json()["type"] == "urn:ostiary:error:token-reused"
    assert running.counts() == before


def test_renewal_over_mtls_keeps_the_key_and_names(running: Running) -> None:
    alice = running.enroll("alice@example.com", ["alice@example.com"])
    with running.client(identity=alice) as client:
        answer = client.post("/renew", json={})
    assert answer.status_code == 201, answer.text
    renewed = identity_of(answer.json(), alice.private_key).certificate
    assert renewed.serial_number != alice.certificate.serial_number
    assert spki(renewed) == spki(alice.certificate)
    assert renewed.subject == alice.certificate.subject
    assert renewed.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ) == alice.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    (entry,) = events(running, "certificate.renewed")
    assert entry.target == f"{renewed.serial_number:x}"
    assert entry.details["renewed_from"] == f"{alice.certificate.serial_number:x}"
    assert entry.details["via"] == "mtls"
    assert status_of(running, renewed) == CertificateStatus.VALID


def test_renewal_over_mtls_with_a_csr_changes_the_key(running: Running) -> None:
    alice = running.enroll("alice@example.com", ["alice@example.com"])
    csr, new_key = make_csr("alice@example.com", ["alice@example.com"])
    with running.client(identity=alice) as client:
        answer = client.post("/renew", json={"csr": csr})
    assert answer.status_code == 201, answer.text
    renewed = identity_of(answer.json(), new_key)
    assert spki(renewed.certificate) == spki(renewed.certificate)
    assert spki(renewed.certificate) != spki(alice.certificate)
    # The renewed certificate is a working credential in its turn.
    with running.client(identity=renewed) as client:
        assert client.post("/renew", json={}).status_code == 201


def test_renewal_with_a_holder_token_works_without_mtls(running: Running) -> None:
    alice = running.enroll("alice@example.com", ["alice@example.com"])
    token = running.holder_token(alice, "renew")
    with running.client() as client:
        answer = client.post("/renew", json={}, headers={"authorization": f"Bearer {token}"})
        replay = client.post("/renew", json={}, headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.text
    assert spki(identity_of(answer.json(), alice.private_key).certificate) == spki(
        alice.certificate
    )
    assert events(running, "certificate.renewed")[0].details["via"] == "token"
    assert replay.status_code == 409
    assert replay.json()["type"] == "urn:ostiary:error:token-reused"


@pytest.mark.parametrize("via", ["mtls", "token"])
def test_a_revoked_certificate_cannot_renew(running: Running, via: str) -> None:
    alice = running.enroll()
    with running.client(identity=alice) as client:
        assert client.post(
            "/revoke", json={"serial_number": f"{alice.certificate.serial_number:x}"}
        ).is_success
    before = running.counts()
    if via == "mtls":
        with running.client(identity=alice) as client:
            answer = client.post("/renew", json={})
    else:
        with running.client() as client:
            token = running.holder_token(alice, "renew")
            answer = client.post("/renew", json={}, headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:ostiary:error:certificate-revoked"
    assert running.counts() == before


def test_an_expired_certificate_renews_within_the_window_only(running: Running) -> None:
    now = datetime.now(UTC)
    recently = issued_at(running, now - timedelta(hours=2), timedelta(hours=1))
    long_ago = issued_at(running, now - timedelta(days=3), timedelta(hours=1))
    with running.client(identity=recently) as client:
        assert client.post("/renew", json={}).status_code == 201
    before = running.counts()
    with running.client(identity=long_ago) as client:
        refused = client.post("/renew", json={})
    assert refused.status_code == 401
    assert refused.json()["type"] == "urn:ostiary:error:bad-certificate"
    assert "too late to renew" in refused.json()["detail"]
    assert running.counts() == before


def test_renewal_needs_a_credential(running: Running) -> None:
    with running.client() as client:
        answer = client.post("/renew", json={})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["type"] == "urn:ostiary:error:unauthorized"


def test_a_holder_revokes_itself_over_mtls_and_then_cannot_use_it(running: Running) -> None:
    alice = running.enroll()
    serial = f"{alice.certificate.serial_number:x}"
    with running.client(identity=alice) as client:
        answer = client.post("/revoke", json={"serial_number": serial, "reason": "keyCompromise"})
        again = client.post("/revoke", json={"serial_number": serial})
    assert answer.status_code == 200
    assert answer.json() == {"serial_number": serial, "status": "revoked"}
    assert status_of(running, alice.certificate) == CertificateStatus.REVOKED
    assert again.status_code == 401  # the credential itself is revoked now
    assert again.json()["type"] == "urn:ostiary:error:certificate-revoked"
    (entry,) = events(running, "certificate.revoked")
    assert entry.actor == f"certificate:{serial}"


def test_a_holder_revokes_itself_with_a_holder_token(running: Running) -> None:
    alice = running.enroll()
    serial = f"{alice.certificate.serial_number:x}"
    token = running.holder_token(alice, "revoke")
    with running.client() as client:
        answer = client.post(
            "/revoke",
            json={"serial_number": serial, "reason": "superseded"},
            headers={"authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200, answer.text
    assert status_of(running, alice.certificate) == CertificateStatus.REVOKED


def test_a_renew_token_does_not_revoke(running: Running) -> None:
    alice = running.enroll()
    token = running.holder_token(alice, "renew")
    with running.client() as client:
        answer = client.post(
            "/revoke",
            json={"serial_number": f"{alice.certificate.serial_number:x}"},
            headers={"authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 401
    assert status_of(running, alice.certificate) == CertificateStatus.VALID


@pytest.mark.parametrize(
    ("target", "reason", "code"),
    [
        pytest.param("other", "unspecified", "policy-denied", id="fail/someone-else"),
        pytest.param("self", "cACompromise", "policy-denied", id="fail/ca-reason"),
        pytest.param("self", "privilegeWithdrawn", "policy-denied", id="fail/operator-reason"),
    ],
)
def test_a_holder_may_only_revoke_itself_for_a_holders_reason(
    running: Running, target: str, reason: str, code: str
) -> None:
    alice, bob = running.enroll(), running.enroll("bob@example.com")
    victim = bob if target == "other" else alice
    with running.client(identity=alice) as client:
        answer = client.post(
            "/revoke",
            json={"serial_number": f"{victim.certificate.serial_number:x}", "reason": reason},
        )
    assert answer.status_code == 403
    assert answer.json()["type"] == f"urn:ostiary:error:{code}"
    assert status_of(running, victim.certificate) == CertificateStatus.VALID


def test_an_admin_revokes_any_certificate_once(running: Running) -> None:
    bob = running.enroll("bob@example.com")
    serial = f"{bob.certificate.serial_number:x}"
    headers = {"authorization": f"Bearer {running.admin_token()}"}
    with running.client() as client:
        answer = client.post(
            "/revoke",
            json={"serial_number": serial, "reason": "privilegeWithdrawn"},
            headers=headers,
        )
        again = client.post("/revoke", json={"serial_number": serial}, headers=headers)
        missing = client.post("/revoke", json={"serial_number": "abcdef"}, headers=headers)
    assert answer.status_code == 200
    assert again.status_code == 409
    assert again.json()["type"] == "urn:ostiary:error:already-revoked"
    assert missing.status_code == 404
    (entry,) = events(running, "certificate.revoked")
    assert entry.actor == "admin@admins"
    assert entry.details["reason"] == "privilegeWithdrawn"


def test_a_sign_token_is_not_an_admin_token(running: Running) -> None:
    bob = running.enroll("bob@example.com")
    with running.client() as client:
        answer = client.post(
            "/revoke",
            json={"serial_number": f"{bob.certificate.serial_number:x}"},
            headers={"authorization": f"Bearer {running.sign_token()}"},
        )
    assert answer.status_code == 401
    assert status_of(running, bob.certificate) == CertificateStatus.VALID


def test_an_expired_certificate_cannot_revoke_over_mtls(running: Running) -> None:
    old = issued_at(running, datetime.now(UTC) - timedelta(hours=2), timedelta(hours=1))
    with running.client(identity=old) as client:
        answer = client.post(
            "/revoke", json={"serial_number": f"{old.certificate.serial_number:x}"}
        )
    assert answer.status_code == 401
    assert answer.json()["type"] == "urn:ostiary:error:bad-certificate"


def test_the_server_certificate_names_the_loopback_address(running: Running) -> None:
    with running.client() as client:
        assert client.get("/health").status_code == 200
    with httpx.Client(base_url=running.server.https_url) as system_trust:
        with pytest.raises(httpx.ConnectError):
            system_trust.get("/health")  # our root is not in the system store
