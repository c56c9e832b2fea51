"""Attestation nonces: handed out by the CA, spent once by a TPM attestation.

A client asks for a nonce (``POST /attestation/nonce``), has its TPM certify the new key over
it (TPM2_Certify ``extraData``) and sends the statement with its CSR. The nonce proves the
statement is fresh: it is stored here when made and spent by one conditional ``UPDATE``, so
of two replicas racing with the same statement exactly one succeeds, and a replay finds the
row spent. Only the nonce's SHA-256 is stored. Unspent rows are purged once they expire,
spent ones a day later; the number of unspent ones is capped by the caller
(:func:`ostiary.provisioners.attestation_nonces.issue_attestation_nonce`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import NoReturn

from sqlalchemy import String, and_, delete, func, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.core.errors import Conflict, Unauthorized
from ostiary.store.models import Base


class AttestationNonce(Base):
    """One nonce: when it was made, until when it may be used, and whether it was."""

    __tablename__ = "attestation_nonces"

    nonce_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


def _digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode("utf-8")).hexdigest()


def _refuse(row: AttestationNonce | None) -> NoReturn:
    if row is None:
        raise Unauthorized("the attestation nonce was not made by this CA")
    if row.used_at is not None:
        raise Conflict("the attestation nonce was already used: attestations are single-use")
    raise Unauthorized("the attestation nonce expired: ask for a new one")


class AttestationNonceRepository:
    """Nonces for TPM attestations, single use across replicas."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, nonce: str, *, now: datetime, expires_at: datetime) -> None:
        self._session.add(
            AttestationNonce(
                nonce_sha256=_digest(nonce), created_at=now, expires_at=expires_at, used_at=None
            )
        )
        self._session.flush()

    def check_usable(self, nonce: str, *, now: datetime) -> None:
        """Refuse, as :meth:`spend` would, a nonce that is unknown, used or expired."""
        row = self._session.get(AttestationNonce, _digest(nonce))
        if row is None or row.used_at is not None or row.expires_at <= now:
            _refuse(row)

    def spend(self, nonce: str, *, now: datetime) -> None:
        """Mark ``nonce`` used; :class:`Unauthorized` if unknown or expired, :class:`Conflict`
        if it was used already (a replayed attestation).
        """
        digest = _digest(nonce)
        result = self._session.execute(
            update(AttestationNonce)
            .where(
                AttestationNonce.nonce_sha256 == digest,
                AttestationNonce.used_at.is_(None),
                AttestationNonce.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(result, "rowcount", 0)) != 1:
            _refuse(self._session.get(AttestationNonce, digest))

    def purge_expired(self, now: datetime, *, keep_spent_until: datetime | None = None) -> int:
        """Delete nonces past their expiry; spent ones only once they expired before
        ``keep_spent_until`` (kept a while so a replay gets the precise "already used").
        Unspent expired nonces go at once: anyone may ask for one, and they prove nothing.
        """
        spent_cutoff = now if keep_spent_until is None else keep_spent_until
        result = self._session.execute(
            delete(AttestationNonce)
            .where(
                or_(
                    and_(AttestationNonce.used_at.is_(None), AttestationNonce.expires_at < now),
                    AttestationNonce.expires_at < spent_cutoff,
                )
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))

    def unspent(self, *, now: datetime) -> tuple[int, datetime | None]:
        """How many nonces may still be spent at ``now``, and the soonest of their expiries."""
        count, soonest = self._session.execute(
            select(func.count(), func.min(AttestationNonce.expires_at)).where(
                AttestationNonce.used_at.is_(None), AttestationNonce.expires_at > now
            )
        ).one()
        return int(count or 0), soonest
