"""Pending certificate requests (approval enrollment) and the officers who decide them.

A request is a CSR waiting for a person: ``pending`` until an officer approves it (then
``issued``, with the certificate's serial) or rejects it (``rejected``, with a reason), or
until ``expires_at`` passes (``expired``, computed when read: nothing needs a sweeper).
The request id is 128 random bits: whoever holds it may poll the request, nothing more.
An optional one-time code is kept only as its SHA-256 hash.

Officers hold their role through certificates the CA owner bound to them
(``ostiary ca officer add NAME --cert CRT``): by the certificate's SHA-256 fingerprint, never by
a name in it, since a requester chooses the names in a CSR. ``officers`` keeps the officer's
name (the audit actor); ``officer_certificates`` the fingerprints that carry the role.
"""

from __future__ import annotations

import builtins
import enum
from datetime import datetime, timedelta

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.core.errors import Conflict, NotFound
from ostiary.store._prepared import Prepared
from ostiary.store._unique import insert_unless_duplicate
from ostiary.store.group_commit import Batch
from ostiary.store.models import (
    NAME_LENGTH,
    SERIAL_LENGTH,
    Base,
    CertificateRecord,
    CertificateStatus,
)
from ostiary.store.types import BigIntegerPrimaryKey

REQUEST_ID_LENGTH = 32
#: An ``approving`` claim older than this was left by a process that died mid-approval: the
#: request counts as pending again.
CLAIM_TIMEOUT = timedelta(minutes=5)


#: How many renewals back a certificate may be from the one bound to an officer.
MAX_RENEWALS_WALKED = 64


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
    #: ``x509`` (``csr_pem`` is a CSR) or ``ssh`` (``csr_pem`` is an OpenSSH public key line
    #: and ``sans`` are ``ssh-principal:<name>``; :mod:`ostiary.provisioners.ssh_approval`).
    kind: Mapped[str] = mapped_column(String(8), default="x509", server_default="x509")

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
    """A person who holds the officer role, by name (the audit actor ``officer:<name>``).

    The name alone grants nothing: the role travels only with the certificates bound to the
    officer in :class:`OfficerCertificate`.
    """

    __tablename__ = "officers"

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    subject_cn: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]
    added_by: Mapped[str | None] = mapped_column(Text)


class OfficerCertificate(Base):
    """A certificate that carries an officer's role, by its SHA-256 fingerprint."""

    __tablename__ = "officer_certificates"

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), index=True)
    #: Lower-case hex SHA-256 of the certificate's DER.
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH))
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

    def ids_starting_with(self, prefix: str, *, limit: int) -> builtins.list[str]:
        """Ids of requests (any status) that start with ``prefix`` (lower-case hex)."""
        return builtins.list(
            self._session.scalars(
                select(CertificateRequest.request_id)
                .where(CertificateRequest.request_id.startswith(prefix, autoescape=True))
                .order_by(CertificateRequest.request_id)
                .limit(limit)
            )
        )

    def recent(self, *, limit: int = 100) -> builtins.list[CertificateRequest]:
        """The newest requests, any status."""
        return builtins.list(
            self._session.scalars(
                select(CertificateRequest)
                .order_by(CertificateRequest.created_at.desc(), CertificateRequest.id.desc())
                .limit(limit)
            )
        )

    def extend(self, request_id: str, *, until: datetime, now: datetime) -> bool:
        """Let a waiting request wait until ``until`` (never shorter); whether it did."""
        result = self._session.execute(
            update(CertificateRequest)
            .where(
                CertificateRequest.request_id == request_id,
                CertificateRequest.expires_at < until,
                _waiting(now),
            )
            .values(expires_at=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def claim(self, request_id: str, *, now: datetime) -> bool:
        """Move a waiting request to ``approving`` (claimed at ``now``); False if another has it."""
        result = self._session.execute(
            update(CertificateRequest)
            .where(CertificateRequest.request_id == request_id, _waiting(now))
            .values(status=RequestStatus.APPROVING.value, decided_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)


#: Moves a request being approved to issued with its certificate's serial; the row, or none.
_REQUEST_ISSUED = Prepared(
    update(CertificateRequest)
    .where(
        CertificateRequest.request_id == bindparam("p_request"),
        CertificateRequest.status == RequestStatus.APPROVING.value,
    )
    .values(
        status=RequestStatus.ISSUED.value,
        decided_at=bindparam("p_at"),
        decided_by=bindparam("p_officer"),
        serial=bindparam("p_serial"),
    )
    .returning(CertificateRequest.request_id)
)


def mark_request_issued(
    batch: Batch, request_id: str, *, serial: str, officer: str, at: datetime
) -> bool:
    """In the issuance's transaction (a group-commit unit's ``then``): the request an officer
    is approving becomes issued with ``serial``. False if it is no longer being approved,
    and then the caller must not let the issuance commit.
    """
    parameters = {"p_request": request_id, "p_at": at, "p_officer": officer, "p_serial": serial}
    return bool(_REQUEST_ISSUED.execute(batch.connection, parameters))


class OfficerRepository:
    """The officers table."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def bind(
        self,
        name: str,
        fingerprint_sha256: str,
        serial: str,
        *,
        now: datetime,
        added_by: str | None,
    ) -> Officer:
        """Bind a certificate (by fingerprint) to officer ``name``, creating the officer.

        :class:`Conflict` if that certificate is bound already (to anyone).
        """
        officer = self._session.scalars(
            select(Officer).where(Officer.subject_cn == name)
        ).one_or_none()
        if officer is None:
            insert_unless_duplicate(
                self._session, Officer(subject_cn=name, created_at=now, added_by=added_by)
            )
            officer = self._session.scalars(select(Officer).where(Officer.subject_cn == name)).one()
        binding = OfficerCertificate(
            officer_id=officer.id,
            fingerprint_sha256=fingerprint_sha256,
            serial=serial,
            created_at=now,
            added_by=added_by,
        )
        if not insert_unless_duplicate(self._session, binding):
            raise Conflict(
                "this certificate already carries an officer's role", serial_number=serial
            )
        return officer

    def name_for_fingerprint(self, fingerprint_sha256: str) -> str | None:
        """The officer a certificate (by SHA-256 fingerprint) is bound to, or None.

        A renewal carries the role: a certificate that is not bound itself holds the role of
        the nearest bound certificate it was renewed from (``renewed_from``, which only a
        renewal by the holder of the predecessor's key records), as long as no certificate
        on that path is revoked. Revoking any certificate of the lineage therefore takes the
        role from all its successors. At most :data:`MAX_RENEWALS_WALKED` steps are taken.
        """
        name = self._bound_name(fingerprint_sha256)
        if name is not None:
            return name
        record = self._session.scalars(
            select(CertificateRecord).where(
                CertificateRecord.fingerprint_sha256 == fingerprint_sha256
            )
        ).one_or_none()
        for _ in range(MAX_RENEWALS_WALKED):
            if record is None or record.renewed_from is None:
                return None
            record = self._session.scalars(
                select(CertificateRecord)
                .where(CertificateRecord.serial == record.renewed_from)
                .limit(1)
            ).one_or_none()
            if record is None or record.status != CertificateStatus.VALID.value:
                return None
            name = self._bound_name(record.fingerprint_sha256)
            if name is not None:
                return name
        return None

    def _bound_name(self, fingerprint_sha256: str) -> str | None:
        return self._session.scalars(
            select(Officer.subject_cn)
            .join(OfficerCertificate, OfficerCertificate.officer_id == Officer.id)
            .where(OfficerCertificate.fingerprint_sha256 == fingerprint_sha256)
        ).one_or_none()

    def names(self) -> builtins.list[str]:
        """Every officer's name (bound to a certificate or not)."""
        return builtins.list(self._session.scalars(select(Officer.subject_cn)))

    def list(self) -> builtins.list[Officer]:
        return builtins.list(self._session.scalars(select(Officer).order_by(Officer.subject_cn)))
