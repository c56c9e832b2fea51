"""Revocation ends a renewal lineage (issue 22, finding 5).

Repro: A issued; B renewed from A; B revoked with keyCompromise; renewing with A gave a new
certificate for B's key. Now only the newest certificate of a lineage renews (a retry with the
successor's own key gets that successor again), and a revocation for keyCompromise revokes
every certificate of the key and refuses the key from then on, on every entry path.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from ostiary.authority.authority import Authority
from ostiary.core.errors import KeyCompromised, RevokedCertificate, Superseded
from ostiary.core.lifetime import Lifetime
from ostiary.provisioners import renewal_authorization
from ostiary.provisioners.officers import bind_officer_certificate, officer_for_certificate
from ostiary.store import AuditEntry, CertificateRecord, CertificateRepository, CertificateStatus

from .conftest import Kit, client_authorization, make_csr

LATER = timedelta(days=2)


def _issue(kit: Kit, key: ec.EllipticCurvePrivateKey, name: str = "alice") -> x509.Certificate:
    authorization = client_authorization(
        name, f"dns:{name}.lab.example", lifetime=Lifetime(default=timedelta(days=7))
    )
    return kit.authority.issue(make_csr(name, key=key), authorization, actor="t")


def _renew(
    authority: Authority,
    kit: Kit,
    certificate: x509.Certificate,
    new_key: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    """What ``POST /renew`` does: the renewal authorization, then Authority.renew."""
    csr = make_csr("alice", key=new_key) if new_key is not None else None
    now = authority.clock()
    authorization, public_key = renewal_authorization(
        authority.store, certificate, now=now, csr=csr, ca=kit.identity
    )
    return authority.renew(certificate, authorization, public_key, actor="t", csr=csr)


def _status(kit: Kit, certificate: x509.Certificate) -> str:
    with kit.store.transaction(read_only=True) as session:
        return CertificateRepository(session).get(certificate.serial_number).status


def _count(kit: Kit) -> int:
    with kit.store.transaction(read_only=True) as session:
        return len(list(session.scalars(select(CertificateRecord.id))))


def _events(kit: Kit, event: str) -> list[AuditEntry]:
    with kit.store.transaction(read_only=True) as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.event == event)))


def test_renewing_from_an_ancestor_of_a_compromised_certificate_is_refused(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = _issue(kit, key)
    second = _renew(kit.authority, kit, first)  # the same key, as `cert renew` does
    kit.authority.revoke(
        second.serial_number, reason=x509.ReasonFlags.key_compromise, actor="holder"
    )
    assert _status(kit, first) == CertificateStatus.REVOKED  # same key: revoked too
    before = _count(kit)
    with pytest.raises(RevokedCertificate):
        _renew(kit.authority, kit, first)
    with pytest.raises(KeyCompromised):  # nor with a new certificate for that key
        _issue(kit, key, "mallory")
    assert _count(kit) == before
    assert [e.details["code"] for e in _events(kit, "certificate.denied")] == ["key-compromised"]


def test_renewing_from_an_ancestor_with_another_key_is_refused(kit: Kit) -> None:
    first = _issue(kit, ec.generate_private_key(ec.SECP256R1()))
    stolen = ec.generate_private_key(ec.SECP256R1())
    second = _renew(kit.authority, kit, first, new_key=stolen)  # --rekey
    kit.authority.revoke(
        second.serial_number, reason=x509.ReasonFlags.key_compromise, actor="holder"
    )
    assert _status(kit, first) == CertificateStatus.VALID  # another key: not compromised
    before = _count(kit)
    with pytest.raises(Superseded, match="renew with the newest certificate"):
        _renew(kit.authority, kit, first)
    with pytest.raises(Superseded):
        _renew(kit.authority, kit, first, new_key=ec.generate_private_key(ec.SECP256R1()))
    assert _count(kit) == before


def test_only_the_newest_certificate_of_a_lineage_renews(kit: Kit) -> None:
    first = _issue(kit, ec.generate_private_key(ec.SECP256R1()))
    second = _renew(kit.authority, kit, first, new_key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(Superseded):  # no fan-out from the ancestor
        _renew(kit.authority, kit, first, new_key=ec.generate_private_key(ec.SECP256R1()))
    third = _renew(kit.authority, kit, second)  # the newest renews
    fourth = _renew(kit.authority, kit, third, new_key=ec.generate_private_key(ec.SECP256R1()))
    with kit.store.transaction(read_only=True) as session:
        records = CertificateRepository(session)
        chain = [records.get(c.serial_number).renewed_from for c in (second, third, fourth)]
    assert chain == [f"{c.serial_number:x}" for c in (first, second, third)]
    assert len(_events(kit, "certificate.denied")) == 1


def test_a_retry_with_the_successors_key_gets_the_same_successor(kit: Kit) -> None:
    """A renewal answer lost on the way: the client retries with the certificate it has."""
    first = _issue(kit, ec.generate_private_key(ec.SECP256R1()))
    second = _renew(kit.authority, kit, first)
    before = _count(kit)
    again = _renew(kit.authority, kit, first)
    assert again == second
    assert _count(kit) == before
    assert len(_events(kit, "certificate.renewal_repeated")) == 1
    new_key = ec.generate_private_key(ec.SECP256R1())
    rekeyed = _renew(kit.authority, kit, second, new_key=new_key)
    assert _renew(kit.authority, kit, second, new_key=new_key) == rekeyed  # same new key
    kit.authority.revoke(rekeyed.serial_number, reason=x509.ReasonFlags.superseded, actor="t")
    with pytest.raises(Superseded):  # a revoked successor is not sent again
        _renew(kit.authority, kit, second, new_key=new_key)


def test_two_successors_of_one_certificate_are_refused_by_the_database(
    replicas: tuple[Kit, Authority],
) -> None:
    """Two replicas renewing one certificate at the same moment: the unique key decides."""
    kit, other = replicas
    first = _issue(kit, ec.generate_private_key(ec.SECP256R1()))
    authorization, _ = renewal_authorization(kit.store, first, now=kit.now, ca=kit.identity)
    winner = make_csr("alice", key=ec.generate_private_key(ec.SECP256R1()))
    loser = make_csr("alice", key=ec.generate_private_key(ec.SECP256R1()))
    kit.authority.issue(winner, authorization, actor="t", renewed_from=first.serial_number)
    before = _count(kit)
    with pytest.raises(Superseded):
        other.issue(loser, authorization, actor="t", renewed_from=first.serial_number)
    assert _count(kit) == before


def test_key_compromise_revokes_every_certificate_of_the_key_and_refuses_it(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alice, bob = _issue(kit, key, "alice"), _issue(kit, key, "bob")
    unrelated = _issue(kit, ec.generate_private_key(ec.SECP256R1()), "carol")
    swept: list[int] = []
    kit.authority.revocation_listeners.append(swept.append)
    kit.authority.revoke(alice.serial_number, reason=x509.ReasonFlags.key_compromise, actor="t")
    assert sorted(swept) == sorted([alice.serial_number, bob.serial_number])
    assert _status(kit, bob) == CertificateStatus.REVOKED
    assert _status(kit, unrelated) == CertificateStatus.VALID
    revoked = _events(kit, "certificate.revoked")
    assert [e.details.get("same_key_as") for e in revoked] == [None, f"{alice.serial_number:x}"]
    crl = x509.load_der_x509_crl(kit.authority.build_crl())
    assert crl.get_revoked_certificate_by_serial_number(bob.serial_number) is not None
    with pytest.raises(KeyCompromised):
        _issue(kit, key, "dave")
    _issue(kit, ec.generate_private_key(ec.SECP256R1()), "dave")  # a new key is fine


def test_other_revocation_reasons_leave_the_key_usable(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alice, bob = _issue(kit, key, "alice"), _issue(kit, key, "bob")
    kit.authority.revoke(alice.serial_number, reason=x509.ReasonFlags.superseded, actor="t")
    assert _status(kit, bob) == CertificateStatus.VALID
    _issue(kit, key, "erin")


def test_the_async_path_refuses_a_compromised_key(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alice = _issue(kit, key)
    kit.authority.revoke(alice.serial_number, reason=x509.ReasonFlags.key_compromise, actor="t")
    authorization = client_authorization("frank", "dns:frank.lab.example")
    csr = make_csr("frank", key=key)
    with pytest.raises(KeyCompromised):
        asyncio.run(kit.authority.issue_async(csr, authorization, actor="t"))


def test_a_renewal_later_than_the_successor_still_sees_it(kit: Kit) -> None:
    first = _issue(kit, ec.generate_private_key(ec.SECP256R1()))
    _renew(kit.authority, kit, first)
    later = Authority(kit.authority.ca, kit.store, clock=lambda: kit.now + LATER)
    assert _renew(later, kit, first).serial_number != first.serial_number  # the successor


# An officer's role follows a renewal (the successor was obtained with the bound certificate's
# key), so an officer whose certificate renews every day need not be bound again each day;
# revoking any certificate of the lineage takes the role from all its successors.


def test_an_officers_role_follows_renewals_and_ends_with_a_revocation(kit: Kit) -> None:
    first = _issue(kit, ec.generate_private_key(ec.SECP256R1()))
    bind_officer_certificate(
        kit.store, "alice", first, ca=kit.identity, now=kit.authority.clock(), actor="owner"
    )
    second = _renew(kit.authority, kit, first)
    third = _renew(kit.authority, kit, second, new_key=ec.generate_private_key(ec.SECP256R1()))
    assert [officer_for_certificate(kit.store, c) for c in (first, second, third)] == [
        "alice",
        "alice",
        "alice",
    ]
    kit.authority.revoke(second.serial_number, reason=x509.ReasonFlags.unspecified, actor="o")
    assert officer_for_certificate(kit.store, third) is None
    assert officer_for_certificate(kit.store, first) == "alice"  # bound itself, not revoked


def test_a_certificate_with_the_same_name_but_no_lineage_holds_no_role(kit: Kit) -> None:
    bound = _issue(kit, ec.generate_private_key(ec.SECP256R1()), "officer-alice")
    bind_officer_certificate(
        kit.store, "alice", bound, ca=kit.identity, now=kit.authority.clock(), actor="owner"
    )
    twin = _issue(kit, ec.generate_private_key(ec.SECP256R1()), "officer-alice")
    assert officer_for_certificate(kit.store, twin) is None
