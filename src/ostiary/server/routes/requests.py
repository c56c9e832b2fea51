"""Approval enrollment over HTTPS: submit a CSR for an officer, then poll for the answer.

- ``POST /requests`` ``{"csr": PEM, "provisioner": NAME, "note": TEXT}`` -> 202 with the
  request id (the capability to poll it) and, when the provisioner wants one, the one-time
  code the requester tells the officer.
- ``GET /requests/{id}`` -> ``pending``, ``issued`` (with the certificate and chain),
  ``rejected`` (with the reason) or ``expired``.
- ``GET /provisioners/{name}/type`` -> which way a client must enroll with that provisioner
  (the client's dispatch by provisioner type); nothing else about it.

Officers decide in the web console or with ``ostiary ca requests approve|reject``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ostiary.core.encoding import load_csr
from ostiary.core.errors import NotFound
from ostiary.provisioners.approval import (
    MAX_NOTE,
    issued_certificate_pem,
    request_view,
    submit_request,
)
from ostiary.provisioners.base import validate_provisioner_name
from ostiary.server.body import json_request_body, read_json
from ostiary.server.context import ServerContext, server_context
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


@router.post(
    "/requests",
    status_code=202,
    response_model=RequestAnswer,
    openapi_extra=json_request_body(SubmitRequest),
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
    if view.status == RequestStatus.ISSUED:
        certificate = issued_certificate_pem(authority.store, view)
        if certificate is not None:
            answer.certificate = CertificateAnswer.of(certificate, context.chain_pem)
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
