"""Renewal lineages and compromised keys: how a stolen key is stopped from fanning out.

A renewal records the serial it ``renewed_from``; a certificate has at most one successor
(the database's unique key on ``renewed_from`` decides across replicas and issuers), so
only the newest certificate of a lineage renews. We chose refusing over "revoke the
predecessor as superseded after a grace period": a grace period is exactly the window in
which two valid certificates exist, and revoking on renewal would also take down a device
that has not yet swapped its files. The predecessor stays valid until its own not_after; it
can no longer renew.

A client whose renewal answer was lost retries with the certificate it still has. With the
successor's own key (no new key, or the same new key), while the successor is valid, it gets
that successor back: nothing new is certified, and the caller proved possession of the very
key it certifies. A retry with yet another key is refused (:class:`Superseded`); the client
keeps its pending key until the answer arrives (``docs/client.md``).

A revocation for keyCompromise marks the key (SHA-256 of its SubjectPublicKeyInfo) in
``compromised_keys`` and revokes every other certificate of that key; from then on the
write transaction of every issuance, whatever its entry path, refuses that key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy.orm import Session

from ostiary.core.errors import NotFound, Superseded
from ostiary.store import (
    AuditLog,
    CertificateRecord,
    CertificateRepository,
    CertificateStatus,
    Store,
    mark_key_compromised,
    spki_sha256_of,
)


@dataclass(frozen=True)
class Successor:
    """The certificate that already renewed the one presented."""

    predecessor: str
    serial: str
    created_at: datetime
    #: Set when this renewal is a retry that gets the successor again.
    certificate: x509.Certificate | None

    def refusal(self) -> Superseded:
        return Superseded(
            f"certificate {self.predecessor} was already renewed at "
            f"{self.created_at:%Y-%m-%d %H:%M:%SZ} (serial {self.serial}): renew with the "
            "newest certificate; if it is lost, request a new certificate",
            serial=self.predecessor,
            successor=self.serial,
        )


def successor_for_renewal(
    store: Store,
    current: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    *,
    now: datetime,
) -> Successor | None:
    """The successor of ``current`` if it has one; with its certificate for a retry."""
    fingerprint = current.fingerprint(hashes.SHA256()).hex()
    with store.transaction(read_only=True) as session:
        repository = CertificateRepository(session)
        try:
            record = repository.by_fingerprint(fingerprint)
        except NotFound:
            return None  # renewal_authorization refuses certificates we did not issue
        successor = repository.successor_of(record)
        if successor is None:
            return None
        repeat = (
            successor.status == CertificateStatus.VALID
            and successor.spki_sha256 == spki_sha256_of(public_key)
            and successor.not_before <= now <= successor.not_after
        )
        return Successor(
            predecessor=record.serial,
            serial=successor.serial,
            created_at=successor.created_at,
            certificate=successor.certificate() if repeat else None,
        )


def revoke_same_key(
    session: Session,
    audit: AuditLog,
    record: CertificateRecord,
    *,
    actor: str | None,
    at: datetime,
) -> list[int]:
    """keyCompromise: mark the key of ``record``, revoke every other certificate of it.

    Renewal without a new key keeps the key, so the predecessors of a certificate (and
    anything else issued for that key, by any issuer) would still open doors: they go too,
    each with its own audit entry. Returns their serial numbers.
    """
    repository = CertificateRepository(session)
    mark_key_compromised(session, record, at=at)
    reason = x509.ReasonFlags.key_compromise.value
    serials = []
    for other in repository.valid_with_key(record.spki_sha256 or ""):
        repository.revoke(
            other.serial_number, reason=reason, at=at, issuer_key_id=other.issuer_key_id
        )
        audit.append(
            "certificate.revoked",
            actor=actor,
            target=other.serial,
            details={"reason": reason, "subject": other.subject, "same_key_as": record.serial},
            at=at,
        )
        serials.append(other.serial_number)
    return serials
