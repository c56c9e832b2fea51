"""Approval enrollment over HTTPS: submit a CSR for an officer, then poll for the answer.

- ``POST /requests`` ``{"csr": PEM, "provisioner": NAME, "note": TEXT}`` -> 202 with the
  request id (the capability to poll it) and, when the provisioner wants one, the one-time
  code the requester tells the officer; 429 past the per-address limit
  (:mod:`ostiary.server.limits`). A request waits a day until an officer opens the queue.
- ``GET /requests/{id}`` -> ``pending``, ``issued`` (with the certificate and chain),
  ``rejected`` (with the reason) or ``expired``.
- ``GET /provisioners/{name}/type`` -> which way a client must enroll with that provisioner
  (the client's dispatch by provisioner type); nothing else about it.

Officers decide in the web console or, with ``ostiary ca requests ...``, through these
(mTLS with a certificate the CA owner bound to an officer; anything else is 401/403):

- ``GET /requests`` -> the waiting requests, each with ``warnings`` when it names an
  existing identity (an officer, or a name of a valid certificate).
- ``POST /requests/{id}/approve`` ``{"code": C}`` and ``POST /requests/{id}/reject``
  ``{"reason": R}``; ``id`` may be a unique prefix of at least 4 hex digits. An SSH request
  (``POST /ssh/requests``) is approved the same way; its ``serial_number`` is then the SSH
  certificate's decimal serial.
- ``POST /requests/reject`` ``{"reason", "provisioner", "submitted_before"}`` rejects every
  waiting request that matches (both filters optional): a flood, dealt with at once.

The bodies are JSON only, so a browser holding an officer's certificate cannot be made to
post them from another site (a cross-site form cannot send ``application/json``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ostiary.core.encoding import load_csr, serial_hex
from ostiary.core.errors import MalformedInput, NotFound, PolicyDenied, Unauthorized
from ostiary.provisioners.approval import MAX_NOTE
from ostiary.provisioners.approval_decisions import approve_request, reject_request
from ostiary.provisioners.approval_queue import (
    issued_certificate_pem,
    open_pending_records,
    request_view,
    submit_request,
)
from ostiary.provisioners.base import validate_provisioner_name
from ostiary.provisioners.officers import (
    identity_warnings,
    officer_for_certificate,
    reject_requests,
    resolve_request_id,
)
from ostiary.provisioners.ssh_approval import KIND as SSH_KIND
from ostiary.provisioners.ssh_approval import approve_ssh_request
from ostiary.server.body import json_request_body, read_json
from ostiary.server.context import ServerContext, server_context
from ostiary.server.credentials import check_peer_certificate, peer_certificate
from ostiary.server.limits import client_address, limits_of
from ostiary.server.models import MAX_PEM, CertificateAnswer
from ostiary.store import ProvisionerRepository, RequestStatus

router = APIRouter(tags=["approval"])
Context = Annotated[ServerContext, Depends(server_context)]


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    csr: str = Field(min_length=1, max_length=MAX_PEM, description="PKCS#10 request, PEM")
    provisioner: str = Field(min_length=1, max_length=64)
    note: str | None = Field(None, max_length=MAX_NOTE, description="for the officer")
    attestation: dict[str, Any] | None = Field(
        None, description="TPM attestation of the CSR's key (docs/tpm.md), if required"
    )


class RequestAnswer(BaseModel):
    request_id: str
    status: Literal["pending", "approving", "issued", "rejected", "expired"]
    expires_at: datetime
    code: str | None = Field(None, description="one-time code to tell the officer (once)")
    reason: str | None = None
    certificate: CertificateAnswer | None = None


class ProvisionerType(BaseModel):
    name: str
    type: str


async def _submit_body(request: Request) -> SubmitRequest:
    return await read_json(request, SubmitRequest)


def _per_address(request: Request) -> None:
    """Each client address may submit only so often (429 past it), checked first."""
    limits_of(request).requests.check(client_address(request))


@router.post(
    "/requests",
    status_code=202,
    response_model=RequestAnswer,
    openapi_extra=json_request_body(SubmitRequest),
    dependencies=[Depends(_per_address)],
)
def submit(
    body: Annotated[SubmitRequest, Depends(_submit_body)], context: Context
) -> RequestAnswer:
    """Record a CSR for an officer's approval (provisioner type ``approval``)."""
    authority = context.authority
    csr = load_csr(body.csr.encode("utf-8"))
    submitted = submit_request(
        authority.store,
        validate_provisioner_name(body.provisioner),
        csr,
        ca=context.ca,
        now=authority.clock(),
        note=body.note,
        attestation=body.attestation,
    )
    return RequestAnswer(
        request_id=submitted.request_id,
        status="pending",
        expires_at=submitted.expires_at,
        code=submitted.code,
    )


@router.get("/requests/{request_id}", response_model=RequestAnswer)
def poll(request_id: str, context: Context) -> RequestAnswer:
    """Where a request stands; the certificate once it is issued."""
    authority = context.authority
    view = request_view(authority.store, request_id[:64], now=authority.clock())
    answer = RequestAnswer(
        request_id=view.request_id,
        status=view.status.value,
        expires_at=view.expires_at,
        reason=view.reason if view.status == RequestStatus.REJECTED else None,
    )
    if view.status == RequestStatus.ISSUED and view.kind != SSH_KIND:  # SSH: /ssh/requests
        certificate = issued_certificate_pem(authority.store, view)
        if certificate is not None:
            answer.certificate = CertificateAnswer.of(certificate, context.chain_of(certificate))
    return answer


@router.get("/provisioners/{name}/type", response_model=ProvisionerType)
def provisioner_type(name: str, context: Context) -> ProvisionerType:
    """The type of provisioner ``name``, so that a client knows how to enroll with it."""
    validate_provisioner_name(name[:80])
    with context.authority.store.transaction(read_only=True) as session:
        try:
            record = ProvisionerRepository(session).get(name)
        except NotFound:
            raise NotFound(f"no provisioner named {name!r}", name=name) from None
        return ProvisionerType(name=record.name, type=record.type)


# --------------------------------------------------------------------------- officers


def officer_actor(request: Request, context: Context) -> str:
    """FastAPI dependency: ``officer:<name>`` of the connection's certificate, else 401/403."""
    certificate = peer_certificate(request)
    if certificate is None:
        raise Unauthorized("deciding requests needs an officer's client certificate (mTLS)")
    authority = context.authority
    check_peer_certificate(authority.store, certificate, ca=context.ca, now=authority.clock())
    name = officer_for_certificate(authority.store, certificate)
    if name is None:
        raise PolicyDenied("this certificate does not carry the officer role")
    return f"officer:{name}"


Officer = Annotated[str, Depends(officer_actor)]


class PendingRequest(BaseModel):
    request_id: str
    provisioner: str
    subject: str
    sans: list[str]
    note: str | None
    needs_code: bool
    created_at: datetime
    expires_at: datetime
    warnings: list[str] = Field(description="existing identities the request names")


class PendingList(BaseModel):
    requests: list[PendingRequest]


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str | None = Field(None, max_length=64)


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=MAX_NOTE)


class RejectManyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=MAX_NOTE)
    provisioner: str | None = Field(None, min_length=1, max_length=64)
    submitted_before: datetime | None = Field(None, description="RFC 3339, with a zone")

    @field_validator("submitted_before", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: object) -> object:
        # pydantic would take a number as a Unix time; the API documents a string.
        if value is not None and not isinstance(value, str):
            raise ValueError("submitted_before must be an RFC 3339 time string")
        return value


class Decision(BaseModel):
    request_id: str
    status: Literal["issued", "rejected"]
    serial_number: str | None = None


class Rejected(BaseModel):
    rejected: list[str]


async def _approve_body(request: Request) -> ApproveBody:
    return await read_json(request, ApproveBody)


async def _reject_body(request: Request) -> RejectBody:
    return await read_json(request, RejectBody)


async def _reject_many_body(request: Request) -> RejectManyBody:
    return await read_json(request, RejectManyBody)


@router.get("/requests", response_model=PendingList)
def pending(officer: Officer, context: Context) -> PendingList:
    """The waiting requests, oldest first (officers only)."""
    authority = context.authority
    now = authority.clock()
    records = open_pending_records(authority.store, now=now)  # opened: docs/console.md
    warnings = identity_warnings(authority.store, records, now=now)
    return PendingList(
        requests=[
            PendingRequest(
                request_id=r.request_id,
                provisioner=r.provisioner,
                subject=r.subject,
                sans=list(r.sans),
                note=r.note,
                needs_code=r.code_sha256 is not None,
                created_at=r.created_at,
                expires_at=r.expires_at,
                warnings=warnings.get(r.request_id, []),
            )
            for r in records
        ]
    )


@router.post(
    "/requests/reject", response_model=Rejected, openapi_extra=json_request_body(RejectManyBody)
)
def reject_many(
    officer: Officer, body: Annotated[RejectManyBody, Depends(_reject_many_body)], context: Context
) -> Rejected:
    """Reject every waiting request (of one provisioner, submitted before a time)."""
    if body.submitted_before is not None and body.submitted_before.tzinfo is None:
        raise MalformedInput("submitted_before needs a time zone (e.g. 2026-12-01T00:00:00Z)")
    rejected = reject_requests(
        context.authority,
        officer=officer,
        reason=body.reason,
        provisioner=body.provisioner,
        submitted_before=body.submitted_before,
    )
    return Rejected(rejected=rejected)


@router.post(
    "/requests/{request_id}/approve",
    response_model=Decision,
    openapi_extra=json_request_body(ApproveBody),
)
def approve(
    request_id: str,
    officer: Officer,  # first: a stranger is refused before the body is read
    body: Annotated[ApproveBody, Depends(_approve_body)],
    context: Context,
) -> Decision:
    """Approve a waiting request: its certificate is issued (officers only)."""
    authority = context.authority
    full_id = resolve_request_id(authority.store, request_id[:64])
    if request_view(authority.store, full_id, now=authority.clock()).kind == SSH_KIND:
        from ostiary.server.routes.ssh import ssh_authority

        issued = approve_ssh_request(
            ssh_authority(context), full_id, officer=officer, code=body.code
        )
        return Decision(request_id=full_id, status="issued", serial_number=str(issued.serial))
    certificate = approve_request(authority, full_id, officer=officer, code=body.code)
    return Decision(
        request_id=full_id, status="issued", serial_number=serial_hex(certificate.serial_number)
    )


@router.post(
    "/requests/{request_id}/reject",
    response_model=Decision,
    openapi_extra=json_request_body(RejectBody),
)
def reject(
    request_id: str,
    officer: Officer,
    body: Annotated[RejectBody, Depends(_reject_body)],
    context: Context,
) -> Decision:
    """Reject a waiting request with a reason the requester will read (officers only)."""
    authority = context.authority
    full_id = resolve_request_id(authority.store, request_id[:64])
    reject_request(authority, full_id, officer=officer, reason=body.reason)
    return Decision(request_id=full_id, status="rejected")
