"""The queue of ``approval`` requests: submitted, looked at, waiting for an officer.

A request is checked as issuance will check it before it is recorded (:func:`submit_request`),
then waits: after a day (:data:`UNOPENED_REQUEST_TTL`) it expires if no officer has opened
the queue since, else after the provisioner's ``request_ttl``
(:func:`open_pending_records`). A provisioner keeps at most :data:`MAX_PENDING` waiting.
With ``require_code`` the requester is shown a one-time code (8 characters, 40 bits) that
the officer must enter when approving, so that approving a stranger's request by mistake is
hard; only its SHA-256 is stored (:func:`request_code_sha256`) and it is compared in
constant time (:mod:`.approval_decisions`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from ostiary.core.errors import BadRequest, Conflict, NotFound
from ostiary.core.names import format_general_name
from ostiary.provisioners.approval import (
    APPROVAL_TYPE,
    MAX_NOTE,
    ApprovalProvisioner,
    approval_authorization,
    check_role_names,
    load_approval_provisioner,
)
from ostiary.provisioners.base import CAIdentity, precheck_request
from ostiary.store import (
    AuditLog,
    CertificateRequest,
    ProvisionerRepository,
    RequestRepository,
    RequestStatus,
    Store,
)

#: Pending requests one provisioner keeps at most: submitting needs no credential, so a
#: flood must not grow the table without bound (expired ones stop counting). The server
#: also limits submissions per client address (:mod:`ostiary.server.limits`).
MAX_PENDING = 1000
#: How long a request waits while no officer has opened it (seen it in the console's queue
#: or ``ca requests list``): a flood nobody looked at clears itself within a day. Opening
#: gives it the provisioner's whole ``request_ttl`` from its submission.
UNOPENED_REQUEST_TTL = timedelta(days=1)
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
_CODE_LENGTH = 8


@dataclass(frozen=True)
class Submitted:
    """What the requester gets back: the id to poll and, if required, the code to tell."""

    request_id: str
    code: str | None
    expires_at: datetime


@dataclass(frozen=True)
class RequestView:
    """A request as the requester (or an officer) sees it; never the code."""

    request_id: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    note: str | None
    status: RequestStatus
    needs_code: bool
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    reason: str | None
    serial: str | None
    kind: str = "x509"

    @classmethod
    def of(cls, record: CertificateRequest, *, now: datetime) -> RequestView:
        return cls(
            request_id=record.request_id,
            provisioner=record.provisioner,
            subject=record.subject,
            sans=tuple(record.sans),
            note=record.note,
            status=record.status_at(now),
            needs_code=record.code_sha256 is not None,
            created_at=record.created_at,
            expires_at=record.expires_at,
            decided_by=record.decided_by,
            reason=record.reason,
            serial=record.serial,
            kind=record.kind or "x509",
        )


def submit_request(
    store: Store,
    provisioner_name: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
    note: str | None = None,
    attestation: Mapping[str, Any] | None = None,
) -> Submitted:
    """Check ``csr`` as issuance will, then record it as pending (audited).

    A provisioner that requires a TPM attestation (``require_attestation``) checks it here,
    before anything is recorded, and spends its nonce; the policy OIDs it earns are kept
    with the request and go into the certificate when an officer approves it.
    """
    from ostiary.provisioners.attest import attestation_for, with_attestation

    provisioner = load_approval_provisioner(store, provisioner_name)
    if note is not None and len(note) > MAX_NOTE:
        raise BadRequest(f"the note is longer than {MAX_NOTE} characters")
    authorization = approval_authorization(provisioner, csr)
    check_role_names(store, provisioner, authorization)
    hardware = attestation_for(store, provisioner.name, attestation, csr, now=now)
    precheck_request(csr, authorization, ca=ca, now=now)
    check_queue_room(store, provisioner, now=now)
    authorization = with_attestation(store, authorization, hardware, now=now)
    return record_request(
        store,
        provisioner,
        subject=authorization.subject.rfc4514_string(),
        names=[format_general_name(n) for n in authorization.names],
        request=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        now=now,
        note=note,
        policies=list(authorization.policies) or None,
    )


def check_queue_room(store: Store, provisioner: ApprovalProvisioner, *, now: datetime) -> None:
    """Refuse (:class:`Conflict`) while the provisioner has :data:`MAX_PENDING` waiting."""
    with store.transaction(read_only=True) as session:
        waiting = RequestRepository(session).count_pending(provisioner.name, now=now)
    if waiting >= MAX_PENDING:
        raise Conflict(
            f"provisioner {provisioner.name!r} already has {waiting} pending requests: "
            "try again after officers have decided some",
            provisioner=provisioner.name,
        )


def record_request(
    store: Store,
    provisioner: ApprovalProvisioner,
    *,
    subject: str,
    names: list[str],
    request: str,
    now: datetime,
    note: str | None,
    policies: list[str] | None = None,
    kind: str = "x509",
) -> Submitted:
    """Record a checked request as pending (audited ``request.submitted``), with its code.

    Check :func:`check_queue_room` first, before anything single-use is spent.
    """
    code = _new_code() if provisioner.require_code else None
    request_id = secrets.token_hex(16)
    expires_at = now + min(provisioner.request_ttl, UNOPENED_REQUEST_TTL)
    with store.transaction() as session:
        RequestRepository(session).add(
            CertificateRequest(
                request_id=request_id,
                provisioner=provisioner.name,
                subject=subject,
                sans=names,
                csr_pem=request,
                note=note,
                code_sha256=request_code_sha256(code) if code is not None else None,
                status=RequestStatus.PENDING.value,
                created_at=now,
                expires_at=expires_at,
                policies=policies,
                kind=kind,
            )
        )
        AuditLog(session).append(
            "request.submitted",
            at=now,
            actor=f"provisioner:{provisioner.name}",
            target=request_id,
            details={
                "subject": subject,
                "san": names,
                "note": note,
                **({"kind": kind} if kind != "x509" else {}),
            },
        )
    return Submitted(request_id, code, expires_at)


def request_view(store: Store, request_id: str, *, now: datetime) -> RequestView:
    with store.transaction(read_only=True) as session:
        return RequestView.of(RequestRepository(session).get(check_request_id(request_id)), now=now)


def issued_certificate_pem(store: Store, view: RequestView) -> x509.Certificate | None:
    """The certificate an issued request got (from the certificate store)."""
    from ostiary.store import CertificateRepository

    if view.serial is None:
        return None
    with store.transaction(read_only=True) as session:
        return CertificateRepository(session).get(int(view.serial, 16)).certificate()


def pending_requests(store: Store, *, now: datetime) -> list[RequestView]:
    with store.transaction(read_only=True) as session:
        return [RequestView.of(r, now=now) for r in RequestRepository(session).pending(now=now)]


def open_pending_requests(store: Store, *, now: datetime) -> list[RequestView]:
    """The queue as an officer is shown it (see :func:`open_pending_records`)."""
    return [RequestView.of(r, now=now) for r in open_pending_records(store, now=now)]


def open_pending_records(store: Store, *, now: datetime) -> list[CertificateRequest]:
    """The waiting requests, oldest first, as an officer is shown them (detached from the
    session): each one shown is opened, and waits from now on until its provisioner's
    ``request_ttl`` (from its submission) has passed, no longer the short
    :data:`UNOPENED_REQUEST_TTL`.
    """
    ttls: dict[str, timedelta] = {}
    with store.transaction() as session:
        requests = RequestRepository(session)
        pending = requests.pending(now=now)
        for record in pending:
            ttl = ttls.get(record.provisioner)
            if ttl is None:
                ttl = ttls[record.provisioner] = _request_ttl(session, record.provisioner)
            until = record.created_at + ttl
            if until > record.expires_at:
                requests.extend(record.request_id, until=until, now=now)
                record.expires_at = until
        for record in pending:
            session.expunge(record)
    return pending


def _request_ttl(session: Session, provisioner: str) -> timedelta:
    """The ``request_ttl`` of ``provisioner`` (the short one if it is gone or changed type)."""
    try:
        record = ProvisionerRepository(session).get(provisioner)
        if record.type == APPROVAL_TYPE:
            return ApprovalProvisioner.from_config(record.name, record.config).request_ttl
    except (NotFound, BadRequest):
        pass
    return UNOPENED_REQUEST_TTL


def request_code_sha256(code: str) -> str:
    """How a one-time code is stored (and compared, :mod:`.approval_decisions`)."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def check_request_id(request_id: str) -> str:
    """``request_id`` in its stored form (32 lower-case hex digits); else :class:`BadRequest`."""
    value = request_id.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest("a request id is 32 hex digits")
    return value


def _new_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))


__all__ = [
    "MAX_PENDING",
    "UNOPENED_REQUEST_TTL",
    "RequestView",
    "Submitted",
    "check_queue_room",
    "check_request_id",
    "issued_certificate_pem",
    "open_pending_records",
    "open_pending_requests",
    "pending_requests",
    "record_request",
    "request_code_sha256",
    "request_view",
    "submit_request",
]
