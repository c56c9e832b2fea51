"""What the console pages read: counts, the issuance chart, certificate rows, audit entries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from ostiary.store import (
    AuditEntry,
    AuditLog,
    AuditVerification,
    CertificateRecord,
    CertificateStatus,
    RequestRepository,
    Store,
)


@dataclass(frozen=True)
class DashboardStats:
    valid: int
    revoked: int
    expiring: int
    pending: int


@dataclass(frozen=True)
class Bar:
    day: date
    count: int
    x: int
    y: int
    height: int


@dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    maximum: int
    width: int
    height: int
    total: int


def dashboard_stats(store: Store, *, now: datetime, expiring_days: int) -> DashboardStats:
    with store.transaction(read_only=True) as session:
        counts = dict.fromkeys(CertificateStatus, 0)
        for status, count in session.execute(
            select(CertificateRecord.status, func.count()).group_by(CertificateRecord.status)
        ):
            counts[CertificateStatus(status)] = count
        expiring = session.scalar(
            select(func.count()).where(
                CertificateRecord.status == CertificateStatus.VALID.value,
                CertificateRecord.not_after >= now,
                CertificateRecord.not_after < now + timedelta(days=expiring_days),
            )
        )
        pending = len(RequestRepository(session).pending(now=now))
    return DashboardStats(
        counts[CertificateStatus.VALID], counts[CertificateStatus.REVOKED], expiring or 0, pending
    )


def issuance_chart(store: Store, *, now: datetime, days: int) -> Chart:
    """Certificates issued per UTC day over the last ``days`` days, as SVG bar geometry."""
    start = (now - timedelta(days=days - 1)).date()
    since = datetime(start.year, start.month, start.day, tzinfo=now.tzinfo)
    with store.transaction(read_only=True) as session:
        times = session.scalars(
            select(CertificateRecord.created_at).where(CertificateRecord.created_at >= since)
        )
        per_day = Counter(t.date() for t in times)
    width, height, bar = 600, 160, 600 // days
    maximum = max(per_day.values(), default=0)
    bars = []
    for index in range(days):
        day = start + timedelta(days=index)
        count = per_day.get(day, 0)
        size = round((height - 20) * count / maximum) if maximum else 0
        bars.append(Bar(day, count, index * bar + 2, height - size, size))
    return Chart(tuple(bars), maximum, width, height, sum(per_day.values()))


def audit_entries(
    store: Store, *, event: str, actor: str, target: str, limit: int
) -> list[AuditEntry]:
    """The newest audit entries matching the filters (event prefix, actor and target text)."""
    query = select(AuditEntry)
    if event:
        query = query.where(AuditEntry.event.startswith(event, autoescape=True))
    if actor:
        query = query.where(AuditEntry.actor.icontains(actor, autoescape=True))
    if target:
        query = query.where(AuditEntry.target.icontains(target, autoescape=True))
    with store.transaction(read_only=True) as session:
        entries = list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
        for entry in entries:
            session.expunge(entry)
    return entries


def verify_audit(store: Store) -> AuditVerification:
    with store.transaction(read_only=True) as session:
        return AuditLog(session).verify()
