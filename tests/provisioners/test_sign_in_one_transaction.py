"""The server's sign path: verify the token, issue, then spend it with the record (one commit)."""

from __future__ import annotations

import asyncio

import pytest
from cryptography import x509
from sqlalchemy import func, select

from ostiary.authority.authority import Authority
from ostiary.core.errors import NameNotAuthorized, TokenReused
from ostiary.provisioners import sign_token_spend, verify_sign_token
from ostiary.store import AuditEntry, AuditLog, CertificateRecord, UsedToken

from .conftest import Kit, make_csr


def audit(kit: Kit) -> list[AuditEntry]:
    with kit.store.transaction(read_only=True) as session:
        assert AuditLog(session).verify().ok
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def counts(kit: Kit) -> tuple[int, int]:
    with kit.store.transaction(read_only=True) as session:
        certificates = session.scalar(select(func.count()).select_from(CertificateRecord))
        tokens = session.scalar(select(func.count()).select_from(UsedToken))
    return certificates or 0, tokens or 0


def sign(
    kit: Kit, token: str, names: tuple[str, ...] = (), *, on: Authority | None = None
) -> x509.Certificate:
    authority = on or kit.authority
    csr = make_csr("host.lab.example", names)
    grant = verify_sign_token(authority.store, token, csr, ca=kit.identity, now=kit.now)
    issuing = authority.issue_async(
        csr,
        grant.authorization,
        actor=f"provisioner:{grant.provisioner}",
        token=sign_token_spend(grant),
    )
    return asyncio.run(issuing)


def test_one_issuance_is_one_audit_entry_naming_the_token(kit: Kit) -> None:
    assert kit.authority.signs_in_process  # a file key: signed in the event loop's thread
    claims = kit.claims()
    certificate = sign(kit, kit.token(claims))
    entries = audit(kit)
    assert [e.event for e in entries] == ["certificate.issued"]
    assert entries[0].target == f"{certificate.serial_number:x}"
    assert entries[0].details["token_id"] == claims["jti"]
    assert counts(kit) == (1, 1)


def test_a_replayed_token_is_refused_audited_and_records_no_certificate(kit: Kit) -> None:
    token = kit.token()
    sign(kit, token)
    with pytest.raises(TokenReused):
        sign(kit, token)
    assert [e.event for e in audit(kit)] == ["certificate.issued", "token.reused"]
    assert counts(kit) == (1, 1)


def test_a_token_replayed_on_another_replica_is_refused(replicas: tuple[Kit, Authority]) -> None:
    kit, other = replicas
    token = kit.token()
    sign(kit, token)
    with pytest.raises(TokenReused):
        sign(kit, token, on=other)
    assert counts(kit) == (1, 1)


def test_a_request_the_pipeline_refuses_leaves_the_token_usable(kit: Kit) -> None:
    token = kit.token()
    with pytest.raises(NameNotAuthorized):
        sign(kit, token, ("evil.example",))
    assert [e.event for e in audit(kit)] == ["certificate.denied"]
    assert counts(kit) == (0, 0)
    sign(kit, token)  # the same token, now with a CSR it covers
    assert counts(kit) == (1, 1)
