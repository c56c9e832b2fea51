"""ACME External Account Binding keys (RFC 8555 section 7.3.4).

A key is made by ``ostiary ca acme eab add``: its id (``kid``) and its HMAC key, sealed with
the CA password (:mod:`ostiary.signers.sealing`; the server must read it back to verify a
MAC). It binds one account, once: :meth:`AcmeEabRepository.bind` is one conditional
``UPDATE ... WHERE account_id IS NULL`` whose row count says who won, so of two replicas
given the same key exactly one binds it. Its name patterns, if any, narrow what the bound
account may order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, LargeBinary, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.core.errors import NotFound
from ostiary.store.acme import ID_LENGTH
from ostiary.store.models import NAME_LENGTH, Base


class AcmeEabKey(Base):
    """An EAB key: sealed HMAC key, the names it allows, the account it bound."""

    __tablename__ = "acme_eab_keys"

    kid: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    #: Allowed-name patterns (``dns:*.lab.example``); empty: the provisioner's own.
    names: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    bound_at: Mapped[datetime | None]
    account_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), unique=True)


class AcmeEabRepository:
    """Reads and writes of EAB keys within one transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, key: AcmeEabKey) -> None:
        self.session.add(key)

    def get(self, kid: str, *, provisioner: str) -> AcmeEabKey:
        row = self.session.get(AcmeEabKey, kid)
        if row is None or row.provisioner != provisioner:
            raise NotFound(f"no EAB key {kid[:40]!r} for provisioner {provisioner!r}")
        return row

    def of_provisioner(self, provisioner: str | None) -> list[AcmeEabKey]:
        query = select(AcmeEabKey).order_by(AcmeEabKey.created_at, AcmeEabKey.kid)
        if provisioner is not None:
            query = query.where(AcmeEabKey.provisioner == provisioner)
        return list(self.session.scalars(query))

    def of_account(self, account_id: str) -> AcmeEabKey | None:
        return self.session.scalars(
            select(AcmeEabKey).where(AcmeEabKey.account_id == account_id)
        ).first()

    def bind(self, kid: str, account_id: str, *, now: datetime) -> bool:
        """Bind an unbound key to ``account_id``: True for exactly one caller. Its HMAC key
        is wiped: a bound key is never verified again.
        """
        result = self.session.execute(
            update(AcmeEabKey)
            .where(AcmeEabKey.kid == kid, AcmeEabKey.account_id.is_(None))
            .values(account_id=account_id, bound_at=now, sealed_key=b"")
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0)) == 1


__all__ = ["AcmeEabKey", "AcmeEabRepository"]
