"""The CA's own certificates and their states (:class:`IssuerRecord`).

Which intermediate issues is kept here, not in a file, so that every replica reads the same
answer: exactly one intermediate is ``active``; the ones it replaced are ``retiring`` until
their last leaf expires (``ostiary ca intermediate list`` shows them as expired after their
own ``notAfter``); an intermediate revoked by the root is ``revoked``.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ostiary.core.errors import Conflict, NotFound
from ostiary.store.models import IssuerRecord

ACTIVE = "active"
RETIRING = "retiring"
REVOKED = "revoked"


def _key_id(certificate: x509.Certificate) -> str:
    return certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest.hex()


def record_issuer(
    session: Session,
    certificate: x509.Certificate,
    *,
    kind: str,
    state: str,
    now: datetime,
    issuer_key_id: str,
) -> IssuerRecord:
    """The row of ``certificate`` (signed by the key ``issuer_key_id``), added with
    ``state`` if it is not recorded yet.
    """
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    found = session.get(IssuerRecord, fingerprint)
    if found is not None:
        return found
    record = IssuerRecord(
        fingerprint_sha256=fingerprint,
        kind=kind,
        key_id=_key_id(certificate),
        issuer_key_id=issuer_key_id,
        serial=f"{certificate.serial_number:x}",
        subject=certificate.subject.rfc4514_string(),
        not_after=certificate.not_valid_after_utc,
        state=state,
        der=certificate.public_bytes(serialization.Encoding.DER),
        created_at=now,
    )
    session.add(record)
    session.flush()
    return record


def issuer_records(session: Session, kind: str | None = None) -> list[IssuerRecord]:
    """Every recorded CA certificate (of ``kind``), oldest first."""
    query = select(IssuerRecord).order_by(IssuerRecord.created_at, IssuerRecord.key_id)
    if kind is not None:
        query = query.where(IssuerRecord.kind == kind)
    return list(session.scalars(query))


def active_intermediate_key_id(session: Session) -> str | None:
    """The key identifier of the intermediate that issues now; None before any rotation."""
    return session.scalar(
        select(IssuerRecord.key_id).where(
            IssuerRecord.kind == "intermediate", IssuerRecord.state == ACTIVE
        )
    )


def make_active(session: Session, fingerprint: str) -> None:
    """``fingerprint`` issues from now on; the intermediate that did retires (one statement
    each, in the caller's transaction, so every replica sees both changes or neither).
    """
    session.execute(
        update(IssuerRecord)
        .where(
            IssuerRecord.kind == "intermediate",
            IssuerRecord.state == ACTIVE,
            IssuerRecord.fingerprint_sha256 != fingerprint,
        )
        .values(state=RETIRING)
    )
    changed = session.execute(
        update(IssuerRecord)
        .where(IssuerRecord.fingerprint_sha256 == fingerprint, IssuerRecord.state != REVOKED)
        .values(state=ACTIVE)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"intermediate {fingerprint} is revoked or unknown: it cannot issue")


def find_issuer(session: Session, fingerprint: str) -> IssuerRecord:
    """The recorded CA certificate with this SHA-256 fingerprint (hex, colons allowed)."""
    wanted = fingerprint.replace(":", "").strip().lower()
    record = session.get(IssuerRecord, wanted)
    if record is None:
        raise NotFound(f"no CA certificate of this CA has the fingerprint {fingerprint!r}")
    return record


def revoke_issuer(session: Session, record: IssuerRecord, *, reason: str, at: datetime) -> None:
    """Mark ``record`` revoked, once (a second revocation is a :class:`Conflict`)."""
    changed = session.execute(
        update(IssuerRecord)
        .where(
            IssuerRecord.fingerprint_sha256 == record.fingerprint_sha256,
            IssuerRecord.state != REVOKED,
        )
        .values(state=REVOKED, revoked_at=at, revocation_reason=reason)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"intermediate {record.fingerprint_sha256} is revoked already")
    session.refresh(record)


def revoked_issuer_entries(session: Session, issuer_key_id: str) -> list[tuple[int, datetime, str]]:
    """(serial, revoked at, reason) of the CA certificates ``issuer_key_id`` revoked."""
    rows = session.execute(
        select(IssuerRecord.serial, IssuerRecord.revoked_at, IssuerRecord.revocation_reason)
        .where(IssuerRecord.issuer_key_id == issuer_key_id, IssuerRecord.state == REVOKED)
        .order_by(IssuerRecord.serial)
    )
    return [(int(serial, 16), at, reason) for serial, at, reason in rows if at and reason]


def set_root_ocsp(session: Session, fingerprint: str, response: bytes) -> None:
    """Keep the root-signed OCSP response about the intermediate ``fingerprint``."""
    session.execute(
        update(IssuerRecord)
        .where(IssuerRecord.fingerprint_sha256 == fingerprint)
        .values(root_ocsp=response)
    )


def root_ocsp_for(session: Session, root_key_id: str, serial: int) -> bytes | None:
    """The kept root-signed OCSP response about the root's intermediate ``serial``."""
    return session.scalar(
        select(IssuerRecord.root_ocsp).where(
            IssuerRecord.issuer_key_id == root_key_id,
            IssuerRecord.kind == "intermediate",
            IssuerRecord.serial == f"{serial:x}",
        )
    )
