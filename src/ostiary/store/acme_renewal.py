"""ACME renewal rules (RFC 9773): renewal windows pulled forward by an operator.

``ostiary ca acme renew-early`` records one rule (a serial, an issuing CA, or everything,
optionally of one provisioner) with the moment it was made. A certificate issued before a
rule that names it has its suggested window start at that moment (and end a little later,
so that a fleet spreads out); certificates issued afterwards are not affected. One row
per command, however many certificates it names.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.store.acme import ID_LENGTH
from ostiary.store.models import KEY_ID_LENGTH, NAME_LENGTH, SERIAL_LENGTH, Base


class AcmeRenewalRule(Base):
    """Certificates issued before ``start`` that this rule names should renew within
    ``start``..``end``.
    """

    __tablename__ = "acme_renewal_rules"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    #: None: every ACME provisioner.
    provisioner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    #: Hex serial; None: every certificate (of ``issuer_key_id`` when set).
    serial: Mapped[str | None] = mapped_column(String(SERIAL_LENGTH), index=True)
    #: The issuing CA's subject key identifier, hex; None: any issuer.
    issuer_key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LENGTH))
    start: Mapped[datetime] = mapped_column(index=True)
    end: Mapped[datetime]


class AcmeRenewalRules:
    """The rules within one transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, rule: AcmeRenewalRule) -> None:
        self.session.add(rule)

    def earliest_for(
        self,
        *,
        serial: str,
        issuer_key_id: str,
        provisioner: str,
        issued_at: datetime,
    ) -> AcmeRenewalRule | None:
        """The earliest rule made after ``issued_at`` that names this certificate."""
        query = select(AcmeRenewalRule).where(
            AcmeRenewalRule.start > issued_at,
            or_(AcmeRenewalRule.provisioner.is_(None), AcmeRenewalRule.provisioner == provisioner),
            or_(AcmeRenewalRule.serial.is_(None), AcmeRenewalRule.serial == serial),
            or_(
                AcmeRenewalRule.issuer_key_id.is_(None),
                AcmeRenewalRule.issuer_key_id == issuer_key_id,
            ),
        )
        return self.session.scalars(query.order_by(AcmeRenewalRule.start).limit(1)).first()


__all__ = ["AcmeRenewalRule", "AcmeRenewalRules"]
