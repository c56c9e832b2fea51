"""ACME (RFC 8555) state: nonces, accounts, orders, authorizations, challenges.

Every row is keyed by a random id (the last part of its URL), so replicas never race for a
sequence. A nonce is spent by one ``DELETE`` whose row count says whether it was there: of
two replicas given the same nonce, exactly one deletes it (RFC 8555 section 6.5). Expired
nonces and expired orders (with their authorizations and challenges) are purged by
:meth:`AcmeRepository.purge_expired`.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.core.errors import NotFound
from ostiary.store.models import NAME_LENGTH, SERIAL_LENGTH, Base

#: Length of the random ids (base64url of 16 octets is 22 characters).
ID_LENGTH = 32
#: An RFC 9773 certID: base64url of a key identifier and of a serial's DER octets.
REPLACES_LENGTH = 160


def new_id() -> str:
    """A random id for a URL: 128 bits from the CSPRNG, base64url."""
    return secrets.token_urlsafe(16)


class AcmeNonce(Base):
    """A nonce handed out in ``Replay-Nonce``; the row goes when it is used."""

    __tablename__ = "acme_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AcmeAccount(Base):
    """An account: its key (JWK, and the RFC 7638 thumbprint that makes it unique)."""

    __tablename__ = "acme_accounts"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH))
    jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    thumbprint: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    contact: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class AcmeOrder(Base):
    """An order: identifiers, profile, requested validity, and the certificate once issued."""

    __tablename__ = "acme_orders"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("acme_accounts.id", ondelete="CASCADE"), index=True
    )
    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(16))
    #: ``[{"type": "dns", "value": "a.example"}, ...]`` as ordered.
    identifiers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    profile: Mapped[str] = mapped_column(String(NAME_LENGTH))
    not_before: Mapped[datetime | None]
    not_after: Mapped[datetime | None]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    #: The RFC 8555 problem document that made the order invalid.
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Hex serial of the certificate issued for it.
    serial: Mapped[str | None] = mapped_column(String(SERIAL_LENGTH))
    #: The RFC 9773 certID of the certificate this order replaces (ARI ``replaces``).
    replaces: Mapped[str | None] = mapped_column(String(REPLACES_LENGTH), index=True)


class AcmeAuthorization(Base):
    """Proof of control of one identifier, for one order (never reused across orders)."""

    __tablename__ = "acme_authorizations"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    order_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("acme_orders.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    identifier_type: Mapped[str] = mapped_column(String(32))
    #: As ordered, without a wildcard's ``*.`` (RFC 8555 section 7.1.4).
    identifier_value: Mapped[str] = mapped_column(Text)
    wildcard: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime]
    #: Shared by the authorization's challenges (section 8.1), 128 bits or more.
    token: Mapped[str] = mapped_column(String(64))
    #: What a device attested (device-attest-01): finalize requires exactly this key.
    attested_spki: Mapped[bytes | None] = mapped_column(LargeBinary)
    hardware_key: Mapped[bool] = mapped_column(Boolean, default=False)


class AcmeChallenge(Base):
    """One way offered to prove an authorization."""

    __tablename__ = "acme_challenges"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    authorization_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("acme_authorizations.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    validated_at: Mapped[datetime | None]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AcmeRepository:
    """Reads and writes of the ACME tables within one transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------ nonces

    def spend_nonce(self, nonce: str, *, now: datetime) -> bool:
        """Delete ``nonce`` if it is there and unexpired: True for exactly one caller."""
        result = self.session.execute(
            delete(AcmeNonce)
            .where(AcmeNonce.nonce == nonce, AcmeNonce.expires_at > now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0)) == 1

    def purge_expired(self, now: datetime) -> int:
        """Delete expired nonces, and expired orders that never got a certificate."""
        purged = 0
        for statement in (
            delete(AcmeNonce).where(AcmeNonce.expires_at <= now),
            delete(AcmeChallenge).where(
                AcmeChallenge.authorization_id.in_(
                    select(AcmeAuthorization.id).where(
                        AcmeAuthorization.order_id.in_(self._expired_orders(now))
                    )
                )
            ),
            delete(AcmeAuthorization).where(
                AcmeAuthorization.order_id.in_(self._expired_orders(now))
            ),
            delete(AcmeOrder).where(AcmeOrder.id.in_(self._expired_orders(now))),
        ):
            result = self.session.execute(statement.execution_options(synchronize_session=False))
            purged += int(getattr(result, "rowcount", 0))
        return purged

    @staticmethod
    def _expired_orders(now: datetime) -> Any:
        return select(AcmeOrder.id).where(AcmeOrder.expires_at <= now, AcmeOrder.serial.is_(None))

    # ------------------------------------------------------------------ rows

    def account(self, account_id: str, *, provisioner: str) -> AcmeAccount:
        row = self.session.get(AcmeAccount, account_id)
        if row is None or row.provisioner != provisioner:
            raise NotFound(f"no account {account_id[:40]!r}")
        return row

    def account_by_thumbprint(self, thumbprint: str) -> AcmeAccount | None:
        return self.session.scalars(
            select(AcmeAccount).where(AcmeAccount.thumbprint == thumbprint)
        ).first()

    def order(self, order_id: str, *, provisioner: str) -> AcmeOrder:
        row = self.session.get(AcmeOrder, order_id)
        if row is None or row.provisioner != provisioner:
            raise NotFound(f"no order {order_id[:40]!r}")
        return row

    def authorization(self, authz_id: str) -> AcmeAuthorization:
        row = self.session.get(AcmeAuthorization, authz_id)
        if row is None:
            raise NotFound(f"no authorization {authz_id[:40]!r}")
        return row

    def challenge(self, challenge_id: str) -> AcmeChallenge:
        row = self.session.get(AcmeChallenge, challenge_id)
        if row is None:
            raise NotFound(f"no challenge {challenge_id[:40]!r}")
        return row

    def authorizations_of(self, order_id: str) -> list[AcmeAuthorization]:
        return list(
            self.session.scalars(
                select(AcmeAuthorization)
                .where(AcmeAuthorization.order_id == order_id)
                .order_by(AcmeAuthorization.id)
            )
        )

    def challenges_of(self, authz_id: str) -> list[AcmeChallenge]:
        return list(
            self.session.scalars(
                select(AcmeChallenge)
                .where(AcmeChallenge.authorization_id == authz_id)
                .order_by(AcmeChallenge.type)
            )
        )

    def orders_of(self, account_id: str, *, after: str | None, limit: int) -> list[AcmeOrder]:
        """The account's orders by id, ``limit`` of them after the id ``after``."""
        query = select(AcmeOrder).where(AcmeOrder.account_id == account_id)
        if after is not None:
            query = query.where(AcmeOrder.id > after)
        return list(self.session.scalars(query.order_by(AcmeOrder.id).limit(limit)))

    def valid_authorizations(self, account_id: str, *, now: datetime) -> list[AcmeAuthorization]:
        return list(
            self.session.scalars(
                select(AcmeAuthorization).where(
                    AcmeAuthorization.account_id == account_id,
                    AcmeAuthorization.status == "valid",
                    AcmeAuthorization.expires_at > now,
                )
            )
        )

    def orders_since(self, account_id: str, since: datetime) -> tuple[int, datetime | None]:
        """How many orders the account placed since ``since``, and the oldest of them."""
        count, oldest = self.session.execute(
            select(func.count(), func.min(AcmeOrder.created_at)).where(
                AcmeOrder.account_id == account_id, AcmeOrder.created_at > since
            )
        ).one()
        return int(count or 0), oldest

    def pending_authorizations(self, account_id: str, *, now: datetime) -> int:
        return int(
            self.session.scalar(
                select(func.count()).where(
                    AcmeAuthorization.account_id == account_id,
                    AcmeAuthorization.status == "pending",
                    AcmeAuthorization.expires_at > now,
                )
            )
            or 0
        )


__all__ = [
    "AcmeAccount",
    "AcmeAuthorization",
    "AcmeChallenge",
    "AcmeNonce",
    "AcmeOrder",
    "AcmeRepository",
    "new_id",
]
