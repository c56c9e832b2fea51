"""Attestation nonces: what a TPM certifies a key over for an ``attest`` provisioner.

Anyone may ask for one (``POST /attestation/nonce``), so they are bounded: 256 random bits,
single use (spent by one conditional update in the database, :mod:`ostiary.store.attestation`),
five minutes to live, and at most :data:`MAX_UNSPENT_NONCES` waiting at once.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from ostiary.core.errors import NotFound, TooManyRequests
from ostiary.provisioners.attest import ATTEST_TYPE
from ostiary.store import AttestationNonceRepository, ProvisionerRecord
from ostiary.store import Store as Database

#: How long a nonce may be used after it was made.
NONCE_TTL = timedelta(minutes=5)
#: How long spent nonces are kept after they expire (unspent ones go when they expire).
NONCE_RETENTION = timedelta(days=1)
#: Unspent nonces kept at most: anyone may ask for one (and each address only so often).
MAX_UNSPENT_NONCES = 10_000


def issue_attestation_nonce(
    store: Database, *, now: datetime, max_unspent: int = MAX_UNSPENT_NONCES
) -> tuple[str, datetime]:
    """A new nonce (256 bits, base64url) stored for single use; and when it expires.

    Only on a CA with an ``attest`` provisioner (:class:`NotFound` otherwise: nothing could
    ever spend it), and while fewer than ``max_unspent`` nonces wait to be spent
    (:class:`TooManyRequests` then, until the soonest expires): anyone may ask for one.
    """
    nonce = secrets.token_urlsafe(32)
    expires_at = now + NONCE_TTL
    with store.transaction() as session:
        attesting = select(ProvisionerRecord.id).where(ProvisionerRecord.type == ATTEST_TYPE)
        if session.scalars(attesting.limit(1)).first() is None:
            raise NotFound(
                "no provisioner of this CA takes TPM attestations: there is no nonce to give"
            )
        nonces = AttestationNonceRepository(session)
        # Unspent nonces go when they expire; spent ones are kept a day, so that a replay
        # is answered "already used" precisely.
        nonces.purge_expired(now, keep_spent_until=now - NONCE_RETENTION)
        waiting, soonest = nonces.unspent(now=now)
        if waiting >= max_unspent:
            wait = (soonest - now).total_seconds() if soonest is not None else 1.0
            raise TooManyRequests.wait(
                f"{waiting} attestation nonces are waiting to be used: ask again later", wait
            )
        nonces.add(nonce, now=now, expires_at=expires_at)
    return nonce, expires_at


__all__ = ["MAX_UNSPENT_NONCES", "NONCE_RETENTION", "NONCE_TTL", "issue_attestation_nonce"]
