"""When an ACME certificate should be renewed (RFC 9773, ACME Renewal Information).

By default the suggested window is the first half of the last third of the lifetime (from
2/3 to 5/6 elapsed), as Let's Encrypt suggests renewing once two thirds have passed, and
with a sixth of the lifetime left over for retries. A revoked certificate's window lies in
the past: renew now. ``ostiary ca acme renew-early`` pulls windows forward (after a
revocation, a change of issuing CA or of policy): it records one
:class:`~ostiary.store.AcmeRenewalRule` naming a serial, an issuing CA or every ACME
certificate, whose window (now, and a spread after it) replaces the default of the
certificates issued before it, when it is earlier. After ``ca intermediate rotate``, a
certificate of an intermediate that no longer issues gets a window that opens now (and lasts
:data:`ISSUER_CHANGE_SPREAD`, so that its clients do not all come at once): clients that
follow ARI move to the new intermediate without waiting for two thirds of their lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest, NotFound
from ostiary.provisioners.acme import ACME_TYPE
from ostiary.store import (
    AcmeRenewalRule,
    AcmeRenewalRules,
    AuditLog,
    CertificateRecord,
    CertificateRepository,
    CertificateStatus,
    ProvisionerRepository,
    Store,
    active_intermediate_key_id,
)
from ostiary.store.acme import new_id

#: How long a client should wait before asking again (``Retry-After``).
RENEWAL_INFO_RETRY = timedelta(hours=1)
#: The longest spread ``renew-early`` may give.
MAX_SPREAD = timedelta(days=7)
#: The window of a certificate whose intermediate no longer issues (after a rotation).
ISSUER_CHANGE_SPREAD = timedelta(hours=6)


@dataclass(frozen=True)
class RenewalWindow:
    """RFC 9773 ``suggestedWindow``: renew at a moment between ``start`` and ``end``."""

    start: datetime
    end: datetime


def default_window(not_before: datetime, not_after: datetime) -> RenewalWindow:
    lifetime = not_after - not_before
    return RenewalWindow(not_before + lifetime * 2 / 3, not_before + lifetime * 5 / 6)


def renewal_window(
    store: Store, provisioner: str, serial: int, issuer_key_id: str, *, now: datetime
) -> RenewalWindow:
    """The window of a certificate this provisioner issued; :class:`NotFound` otherwise."""
    with store.transaction(read_only=True) as session:
        try:
            record = CertificateRepository(session).get(serial, issuer_key_id)
        except NotFound:
            record = None
        if record is None or record.provisioner != provisioner:
            raise NotFound("no certificate of this ACME directory has this certID")
        if record.status == CertificateStatus.REVOKED:
            return RenewalWindow(now - timedelta(minutes=2), now - timedelta(minutes=1))
        window = default_window(record.not_before, record.not_after)
        rule = AcmeRenewalRules(session).earliest_for(
            serial=record.serial,
            issuer_key_id=record.issuer_key_id,
            provisioner=provisioner,
            issued_at=record.created_at,
        )
        active = active_intermediate_key_id(session)
    if rule is not None and rule.start < window.start:
        window = RenewalWindow(rule.start, min(rule.end, window.end))
    if active is not None and active != record.issuer_key_id and window.start > now:
        # its intermediate retired (ca intermediate rotate): move to the new one soon
        end = max(min(now + ISSUER_CHANGE_SPREAD, window.end), now + timedelta(seconds=1))
        window = RenewalWindow(now, end)
    return window


def renew_early(
    store: Store,
    *,
    serial: int | None,
    issuer_key_id: str | None,
    provisioner: str | None,
    spread: timedelta,
    now: datetime,
    actor: str | None = None,
) -> int:
    """Record a rule pulling windows forward; the number of valid certificates it names."""
    if not timedelta() <= spread <= MAX_SPREAD:
        raise BadRequest("--spread must be between 0s and 7d")
    with store.transaction() as session:
        acme_names = [
            record.name
            for record in ProvisionerRepository(session).list()
            if record.type == ACME_TYPE
        ]
        if provisioner is not None and provisioner not in acme_names:
            raise NotFound(f"no ACME provisioner {provisioner!r}")
        names = [provisioner] if provisioner is not None else acme_names
        query = select(func.count()).where(
            CertificateRecord.status == CertificateStatus.VALID,
            CertificateRecord.not_after > now,
            CertificateRecord.provisioner.in_(names),
        )
        if serial is not None:
            query = query.where(CertificateRecord.serial == serial_hex(serial))
        if issuer_key_id is not None:
            query = query.where(CertificateRecord.issuer_key_id == issuer_key_id)
        count = int(session.scalar(query) or 0)
        if serial is not None and count == 0:
            raise NotFound(f"no valid ACME certificate with serial {serial_hex(serial)}")
        # At least a second: RFC 9773 wants the window's end after its start.
        end = now + max(spread, timedelta(seconds=1))
        AcmeRenewalRules(session).add(
            AcmeRenewalRule(
                id=new_id(),
                provisioner=provisioner,
                serial=None if serial is None else serial_hex(serial),
                issuer_key_id=issuer_key_id,
                start=now,
                end=end,
            )
        )
        AuditLog(session).append(
            "acme.renew_early",
            at=now,
            actor=actor,
            target=provisioner or "*",
            details={
                "serial": None if serial is None else serial_hex(serial),
                "issuer_key_id": issuer_key_id,
                "until": end.isoformat(),
                "certificates": count,
            },
        )
    return count


__all__ = [
    "MAX_SPREAD",
    "RENEWAL_INFO_RETRY",
    "RenewalWindow",
    "default_window",
    "renew_early",
    "renewal_window",
]
