"""The record of issued OpenSSH certificates: add, find, revoke, list for KRLs and the console."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ostiary.core.errors import AlreadyRevoked, NotFound
from ostiary.store.models import CertificateStatus, SSHCertificateRecord


class SSHCertificateRepository:
    """SSH certificates of this CA, by CA key and serial."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, record: SSHCertificateRecord) -> SSHCertificateRecord:
        self._session.add(record)
        self._session.flush()  # the unique (CA key, serial) is checked here
        return record

    def get(self, serial: int, *, ca_key_sha256: str | None = None) -> SSHCertificateRecord:
        """The certificate with ``serial`` (under ``ca_key_sha256`` when given)."""
        query = select(SSHCertificateRecord).where(SSHCertificateRecord.serial == f"{serial:x}")
        if ca_key_sha256 is not None:
            query = query.where(SSHCertificateRecord.ca_key_sha256 == ca_key_sha256)
        found = list(self._session.scalars(query.limit(2)))
        if not found:
            raise NotFound(f"no SSH certificate with serial {serial}", serial=serial)
        if len(found) > 1:
            raise NotFound(
                f"serial {serial} names certificates of both SSH CAs: name the CA", serial=serial
            )
        return found[0]

    def revoke(self, record: SSHCertificateRecord, *, now: datetime) -> None:
        """Mark ``record`` revoked, once: a conditional update, so two revokers cannot both win."""
        done = self._session.execute(
            update(SSHCertificateRecord)
            .where(
                SSHCertificateRecord.id == record.id,
                SSHCertificateRecord.status == CertificateStatus.VALID.value,
            )
            .values(status=CertificateStatus.REVOKED.value, revoked_at=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise AlreadyRevoked(
                f"SSH certificate {record.serial_number} is revoked already",
                serial=record.serial_number,
            )
        self._session.refresh(record)

    def revoked_serials(self, ca_key_sha256: str) -> list[int]:
        rows = self._session.scalars(
            select(SSHCertificateRecord.serial).where(
                SSHCertificateRecord.status == CertificateStatus.REVOKED.value,
                SSHCertificateRecord.ca_key_sha256 == ca_key_sha256,
            )
        )
        return [int(serial, 16) for serial in rows]

    def revocation_count(self) -> int:
        """How many certificates are revoked: only grows, so it numbers KRL versions."""
        return int(
            self._session.scalar(
                select(func.count()).where(
                    SSHCertificateRecord.status == CertificateStatus.REVOKED.value
                )
            )
            or 0
        )

    def last_revoked_at(self) -> datetime | None:
        """When the newest revocation was made (None before the first)."""
        return self._session.scalar(select(func.max(SSHCertificateRecord.revoked_at)))

    def search(
        self, text: str | None, *, limit: int, status: str | None = None
    ) -> list[SSHCertificateRecord]:
        """Newest first; ``text`` matches the key id, a principal or the key fingerprint."""
        query = select(SSHCertificateRecord)
        if status is not None:
            query = query.where(SSHCertificateRecord.status == status)
        if text:
            query = query.where(
                or_(
                    SSHCertificateRecord.key_id.icontains(text, autoescape=True),
                    func.cast(
                        SSHCertificateRecord.principals, type_=SSHCertificateRecord.key_id.type
                    ).icontains(text, autoescape=True),
                    SSHCertificateRecord.key_fingerprint.icontains(text, autoescape=True),
                )
            )
        return list(
            self._session.scalars(query.order_by(SSHCertificateRecord.id.desc()).limit(limit))
        )
