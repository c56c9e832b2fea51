"""SCEP state: one-time challenges and the transactions devices poll.

A challenge is handed to one device (``ostiary ca scep challenge``) and names what its
certificate will carry. Only its SHA-256 is stored; it is spent by one conditional
``UPDATE``, so of two requests racing with it (on any replica) exactly one gets it.

A transaction is what a device's ``transactionID`` stands for once its challenge was
spent: the CSR it came with (by SHA-256), and where it got to (issued, waiting for an
officer, refused). The primary key (provisioner, transaction id) makes a repeated
``transactionID`` find the first answer instead of issuing twice.

An issued enrollment is written in the certificate's own group-commit unit
(:meth:`ostiary.authority.Authority.issue`'s ``then``): :func:`spend_challenge_in` and
:func:`transaction_values` are its Core statement and row.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, String, Text, bindparam, select, update
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


class TransactionState(NamedTuple):
    """Where a transaction got to (the columns of :class:`ScepTransaction` that say so)."""

    csr_sha256: str
    request_id: str | None
    serial: str | None
    failure: str | None


class ChallengeRow(NamedTuple):
    """A challenge as :func:`~ostiary.provisioners.grants.grant_of_row` checks it."""

    provisioner: str
    challenge_sha256: str
    subject: str
    sans: list[str]
    expires_at: datetime
    used_at: datetime | None


_T = ScepTransaction
_C = ScepChallenge
_READ_TRANSACTION = Prepared(
    select(_T.csr_sha256, _T.request_id, _T.serial, _T.failure).where(
        _T.provisioner == bindparam("provisioner"),
        _T.transaction_id == bindparam("transaction_id"),
    )
)
_READ_CHALLENGE = Prepared(
    select(_C.provisioner, _C.challenge_sha256, _C.subject, _C.sans, _C.expires_at, _C.used_at)
    .where(_C.challenge_sha256 == bindparam("digest")),
    typed=True,
)  # fmt: skip


def read_request_rows(
    engine: Engine, provisioner: str, transaction_id: str, challenge: str | None
) -> tuple[TransactionState | None, ChallengeRow | None]:
    """The transaction ``transaction_id`` of ``provisioner`` and the row of the challenge
    ``challenge`` for it (used or not; None when ``challenge`` is None), each if any: what
    a PKCSReq needs to know before it issues. Two indexed queries on one pooled connection,
    on the driver (:class:`~ostiary.store._prepared.Prepared`), instead of two ORM sessions;
    they need no common snapshot, as the write re-checks both (the challenge spent by a
    conditional ``UPDATE``, the transaction by its primary key). ``engine`` should be a
    read-only one.
    """
    found = None
    with engine.connect() as connection:
        parameters = {"provisioner": provisioner, "transaction_id": transaction_id}
        transactions = _READ_TRANSACTION.execute(connection, parameters)
        if challenge is not None:
            digest = challenge_digest(challenge)
            challenges = _READ_CHALLENGE.execute(connection, {"digest": digest})
            if challenges:
                row = ChallengeRow(*challenges[0])
                found = row if _names(row, provisioner, digest) else None
    return (TransactionState(*transactions[0]) if transactions else None), found


def _names(row: ChallengeRow | ScepChallenge, provisioner: str, digest: str) -> bool:
    """Whether the challenge row found by ``digest`` is ``provisioner``'s: the digests
    compared in constant time, as the ORM read and the Core read both must.
    """
    return row.provisioner == provisioner and hmac.compare_digest(row.challenge_sha256, digest)


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
        return row if row is not None and _names(row, provisioner, digest) else None

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
    """In a group-commit unit: mark the challenge used. True for exactly one caller (on any
    replica); False if it was used or expired meanwhile, and then the caller must not let
    its unit commit.
    """
    parameters = {"digest": challenge_sha256, "now": now, "used_at": now}
    return bool(_SPEND_CHALLENGE.execute(batch.connection, parameters))


def transaction_values(
    *,
    provisioner: str,
    transaction_id: str,
    csr_sha256: str,
    created_at: datetime,
    serial: str | None,
) -> dict[str, Any]:
    """The ``scep_transactions`` row of an issued enrollment, for :meth:`Batch.insert`."""
    return {
        "provisioner": provisioner,
        "transaction_id": transaction_id,
        "csr_sha256": csr_sha256,
        "created_at": created_at,
        "request_id": None,
        "serial": serial,
        "failure": None,
    }
