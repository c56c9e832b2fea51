"""SCEP state: one-time challenges and the transactions devices poll.

A challenge is handed to one device (``ostiary ca scep challenge``) and names what its
certificate will carry. Only its SHA-256 is stored; it is spent by one conditional
``UPDATE``, so of two requests racing with it (on any replica) exactly one gets it.

A transaction is what a device's ``transactionID`` stands for once its challenge was
spent: the CSR it came with (by SHA-256), and where it got to (issued, waiting for an
officer, refused). The primary key (provisioner, transaction id) makes a repeated
``transactionID`` find the first answer instead of issuing twice.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import String, Text, bindparam, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.store._prepared import Prepared
from ostiary.store.group_commit import Batch
from ostiary.store.models import NAME_LENGTH, SERIAL_LENGTH, Base

#: Longest transactionID kept (certmonger sends 77-78 digits, scepclient 28 characters).
TRANSACTION_ID_LENGTH = 128


class ScepChallenge(Base):
    """One one-time challenge: the names it grants, until when, and whether it was used."""

    __tablename__ = "scep_challenges"

    challenge_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH))
    #: RFC 4514 subject and ``kind:value`` SANs the certificate gets.
    subject: Mapped[str] = mapped_column(Text)
    sans: Mapped[list[str]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class ScepTransaction(Base):
    """A device's transaction: its CSR's hash and where it got to."""

    __tablename__ = "scep_transactions"

    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(TRANSACTION_ID_LENGTH), primary_key=True)
    csr_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    #: The approval request waiting for an officer (``--require-approval``), if any.
    request_id: Mapped[str | None] = mapped_column(String(32))
    #: Hex serial of the certificate once issued.
    serial: Mapped[str | None] = mapped_column(String(SERIAL_LENGTH))
    #: Why it was refused after the challenge was spent (shown again on a repeat).
    failure: Mapped[str | None] = mapped_column(Text)


def challenge_digest(challenge: str) -> str:
    return hashlib.sha256(challenge.encode("utf-8")).hexdigest()


class ScepRepository:
    """Challenges (single use across replicas) and transactions of SCEP provisioners."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add_challenge(
        self,
        challenge: str,
        *,
        provisioner: str,
        subject: str,
        sans: list[str],
        now: datetime,
        expires_at: datetime,
    ) -> None:
        self._session.add(
            ScepChallenge(
                challenge_sha256=challenge_digest(challenge),
                provisioner=provisioner,
                subject=subject,
                sans=sans,
                created_at=now,
                expires_at=expires_at,
                used_at=None,
            )
        )
        self._session.flush()

    def find_challenge(self, provisioner: str, challenge: str) -> ScepChallenge | None:
        """The challenge row ``challenge`` names for ``provisioner`` (used or not), if any.

        The row is found by the digest; the digests are then compared in constant time.
        """
        digest = challenge_digest(challenge)
        row = self._session.get(ScepChallenge, digest)
        if row is None or row.provisioner != provisioner:
            return None
        return row if hmac.compare_digest(row.challenge_sha256, digest) else None

    def spend_challenge(self, challenge_sha256: str, *, now: datetime) -> bool:
        """Mark the challenge used; False if it was used or expired meanwhile."""
        result = self._session.execute(
            update(ScepChallenge)
            .where(
                ScepChallenge.challenge_sha256 == challenge_sha256,
                ScepChallenge.used_at.is_(None),
                ScepChallenge.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0)) == 1

    def transaction(self, provisioner: str, transaction_id: str) -> ScepTransaction | None:
        return self._session.get(ScepTransaction, (provisioner, transaction_id))

    def add_transaction(self, row: ScepTransaction) -> None:
        """Record a transaction; a concurrent one with the same id fails the flush."""
        self._session.add(row)
        self._session.flush()


#: Spends one unused, unexpired challenge; the row it changed, or none.
_SPEND_CHALLENGE = Prepared(
    update(ScepChallenge)
    .where(
        ScepChallenge.challenge_sha256 == bindparam("digest"),
        ScepChallenge.used_at.is_(None),
        ScepChallenge.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("used_at"))
    .returning(ScepChallenge.challenge_sha256)
)


def spend_challenge_in(batch: Batch, challenge_sha256: str, *, now: datetime) -> bool:
    """:meth:`ScepRepository.spend_challenge` in an issuance's transaction (a group-commit
    unit's ``then``): spent with the certificate, or not at all if the issuance is not
    recorded (the audit log cannot be written, the database fails). False if it was used or
    expired meanwhile, and then the caller must not let the issuance commit.
    """
    parameters = {"digest": challenge_sha256, "now": now, "used_at": now}
    return bool(_SPEND_CHALLENGE.execute(batch.connection, parameters))
