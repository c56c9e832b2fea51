"""Pending certificate requests (approval enrollment) and the officers who decide them.

A request is a CSR waiting for a person: ``pending`` until an officer approves it (then
``issued``, with the certificate's serial) or rejects it (``rejected``, with a reason), or
until ``expires_at`` passes (``expired``, computed when read: nothing needs a sweeper).
The request id is 128 random bits: whoever holds it may poll the request, nothing more.
An optional one-time code is kept only as its SHA-256 hash.

Officers are named by the common name of their client certificate's subject; the console
and the officer commands check the role here.
"""

from __future__ import annotations

import builtins
import enum
from datetime import datetime, timedelta

from sqlalchemy import JSON, ColumnElement, Index, String, Text, and_, func, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.core.errors import Conflict, NotFound
from ostiary.store._unique import insert_unless_duplicate
from ostiary.store.models import NAME_LENGTH, SERIAL_LENGTH, Base
from ostiary.store.types import BigIntegerPrimaryKey

REQUEST_ID_LENGTH = 32
#: An ``approving`` claim older than this was left by a process that died mid-approval: the
#: request counts as pending again.
CLAIM_TIMEOUT = timedelta(minutes=5)


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    #: Taken by one officer while the certificate is being issued (a short moment).
    APPROVING = "approving"
    ISSUED = "issued"
    REJECTED = "rejected"
    EXPIRED = "expired"


class CertificateRequest(Base):
    """One CSR waiting for (or decided by) an officer."""

    __tablename__ = "certificate_requests"
    __table_args__ = (Index(None, "status", "expires_at"),)

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), unique=True)
    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH))
    #: RFC 4514 string of the CSR's subject.
    subject: Mapped[str] = mapped_column(Text)
    #: The CSR's SANs as ``kind:value`` texts: what the officer approves.
    sans: Mapped[list[str]]
    csr_pem: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    #: SHA-256 hex of the one-time code shown to the requester, if the provisioner wants one.
    code_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    serial: Mapped[str | None] = mapped_column(String(SERIAL_LENGTH))
    #: Certificate-policy OIDs the request earned before an officer saw it (a verified TPM
    #: attestation of its key, docs/tpm.md); added to the certificate when approved.
    policies: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)

    def status_at(self, now: datetime) -> RequestStatus:
        """The status as seen at ``now``: a pending request past ``expires_at`` is expired."""
        status = RequestStatus(self.status)
        if status == RequestStatus.APPROVING and (
            self.decided_at is None or self.decided_at <= now - CLAIM_TIMEOUT
        ):
            status = RequestStatus.PENDING
        if status == RequestStatus.PENDING and now >= self.expires_at:
            return RequestStatus.EXPIRED
        return status


class Officer(Base):
    """A certificate subject common name that holds the officer role."""

    __tablename__ = "officers"

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    subject_cn: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]
    added_by: Mapped[str | None] = mapped_column(Text)


def _waiting(now: datetime) -> ColumnElement[bool]:
    """Pending (or claimed by an approval that died) and not expired at ``now``."""
    return and_(
        CertificateRequest.expires_at > now,
        or_(
            CertificateRequest.status == RequestStatus.PENDING.value,
            and_(
                CertificateRequest.status == RequestStatus.APPROVING.value,
                CertificateRequest.decided_at <= now - CLAIM_TIMEOUT,
            ),
        ),
    )


class RequestRepository:
    """The certificate_requests table."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, request: CertificateRequest) -> CertificateRequest:
        self._session.add(request)
        self._session.flush()
        return request

    def get(self, request_id: str) -> CertificateRequest:
        """The request ``request_id``; :class:`NotFound` if there is none."""
        record = self._session.scalars(
            select(CertificateRequest).where(CertificateRequest.request_id == request_id)
        ).one_or_none()
        if record is None:
            raise NotFound("no such certificate request", request_id=request_id[:40])
        return record

    def pending(self, *, now: datetime) -> builtins.list[CertificateRequest]:
        """Requests still waiting at ``now``, oldest first."""
        return builtins.list(
            self._session.scalars(
                select(CertificateRequest)
                .where(_waiting(now))
                .order_by(CertificateRequest.created_at, CertificateRequest.id)
            )
        )

    def count_pending(self, provisioner: str, *, now: datetime) -> int:
        """How many requests to ``provisioner`` are still waiting at ``now``."""
        count = self._session.scalar(
            select(func.count()).where(CertificateRequest.provisioner == provisioner, _waiting(now))
        )
        return int(count or 0)

    def recent(self, *, limit: int = 100) -> builtins.list[CertificateRequest]:
        """The newest requests, any status."""
        return builtins.list(
            self._session.scalars(
                select(CertificateRequest)
                .order_by(CertificateRequest.created_at.desc(), CertificateRequest.id.desc())
                .limit(limit)
            )
        )

    def claim(self, request_id: str, *, now: datetime) -> bool:
        """Move a waiting request to ``approving`` (claimed at ``now``); False if another has it."""
        result = self._session.execute(
            update(CertificateRequest)
            .where(CertificateRequest.request_id == request_id, _waiting(now))
            .values(status=RequestStatus.APPROVING.value, decided_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)


class OfficerRepository:
    """The officers table."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, subject_cn: str, *, now: datetime, added_by: str | None) -> Officer:
        """Grant the role; :class:`Conflict` if ``subject_cn`` has it already."""
        officer = Officer(subject_cn=subject_cn, created_at=now, added_by=added_by)
        if not insert_unless_duplicate(self._session, officer):
            raise Conflict(f"{subject_cn!r} is already an officer", subject_cn=subject_cn)
        return officer

    def is_officer(self, subject_cn: str) -> bool:
        return (
            self._session.scalars(
                select(Officer.id).where(Officer.subject_cn == subject_cn)
            ).one_or_none()
            is not None
        )

    def list(self) -> builtins.list[Officer]:
        return builtins.list(self._session.scalars(select(Officer).order_by(Officer.subject_cn)))
