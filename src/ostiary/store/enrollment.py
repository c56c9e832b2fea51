"""One-time enrollment secrets bound to names: ACME ClientIdentifiers and enrollment codes.

- ``acme-client-id``: the ``ClientIdentifier`` of an Apple ACME payload
  (``ostiary ca acme client-id``, or the ``/enroll`` page). The device sends it as its
  ``permanent-identifier``; the CA spends it when the device-attest-01 challenge starts and
  the order then carries the names bound here (:mod:`ostiary.provisioners.client_ids`).
- ``enroll-code``: a short code an officer hands a person (``ostiary ca enroll-code``); typed
  on the ``/enroll`` page, it is spent and the page makes a fresh SCEP challenge or
  ClientIdentifier bound to the same names.

Only the secret's SHA-256 is stored. Spending is one conditional ``UPDATE`` (unused, not
expired), so of two replicas racing with one secret exactly one gets it.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import String, Text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.store.models import NAME_LENGTH, Base

ACME_CLIENT_ID = "acme-client-id"
ENROLL_CODE = "enroll-code"
SECRET_KINDS = (ACME_CLIENT_ID, ENROLL_CODE)


class EnrollmentSecret(Base):
    """One one-time secret: its kind, the provisioner it is for, the names it grants."""

    __tablename__ = "enrollment_secrets"

    secret_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH))
    #: RFC 4514 subject and ``kind:value`` SANs the certificate gets.
    subject: Mapped[str] = mapped_column(Text)
    sans: Mapped[list[str]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    #: What spent it (an ACME order id), when that matters later.
    used_by: Mapped[str | None] = mapped_column(String(64), index=True)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class EnrollmentSecretRepository:
    """Add, find and spend (once, across replicas) enrollment secrets."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(
        self,
        secret: str,
        *,
        kind: str,
        provisioner: str,
        subject: str,
        sans: list[str],
        now: datetime,
        expires_at: datetime,
    ) -> None:
        self._session.add(
            EnrollmentSecret(
                secret_sha256=secret_digest(secret),
                kind=kind,
                provisioner=provisioner,
                subject=subject,
                sans=sans,
                created_at=now,
                expires_at=expires_at,
                used_at=None,
                used_by=None,
            )
        )
        self._session.flush()

    def find(self, kind: str, secret: str) -> EnrollmentSecret | None:
        """The row ``secret`` names (used or not), if it is of ``kind``; the digests are
        compared in constant time once the row is found by digest.
        """
        digest = secret_digest(secret)
        row = self._session.get(EnrollmentSecret, digest)
        if row is None or row.kind != kind:
            return None
        return row if hmac.compare_digest(row.secret_sha256, digest) else None

    def spent_by(self, kind: str, used_by: str) -> EnrollmentSecret | None:
        """The secret of ``kind`` that ``used_by`` (an order id) spent, if any."""
        return (
            self._session.query(EnrollmentSecret)
            .filter(EnrollmentSecret.kind == kind, EnrollmentSecret.used_by == used_by)
            .one_or_none()
        )

    def spend(self, secret_sha256: str, *, now: datetime, used_by: str | None = None) -> bool:
        """Mark the secret used; False if it was used or expired meanwhile."""
        result = self._session.execute(
            update(EnrollmentSecret)
            .where(
                EnrollmentSecret.secret_sha256 == secret_sha256,
                EnrollmentSecret.used_at.is_(None),
                EnrollmentSecret.expires_at > now,
            )
            .values(used_at=now, used_by=used_by)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0)) == 1


__all__ = [
    "ACME_CLIENT_ID",
    "ENROLL_CODE",
    "SECRET_KINDS",
    "EnrollmentSecret",
    "EnrollmentSecretRepository",
    "secret_digest",
]
