"""TPM key attestation (HTTPS only; see ``docs/api.md`` and ``docs/tpm.md``).

- ``POST /attestation/nonce``: a fresh nonce, stored for single use, valid five minutes; the
  client's TPM certifies its new key over it (TPM2_Certify ``extraData``). Only on a CA
  with an ``attest`` provisioner, limited per client address and in number
  (:mod:`ostiary.server.limits`).
- ``POST /provisioners/{name}/attest``: a CSR and the attestation statement; the ``attest``
  provisioner ``name`` verifies it (:mod:`ostiary.provisioners.attest`), spends the nonce and
  the certificate is issued for the device its attestation key was certified for, with the
  provisioner's hardware-key policy OID.

The ``attestation`` member has the same shape wherever a provisioner requires attestation
(``POST /sign``, ``POST /provisioners/{name}/sign``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ostiary.core.encoding import load_csr
from ostiary.provisioners.attest import (
    AttestationStatement,
    authorize_attest_sign,
    issue_attestation_nonce,
)
from ostiary.server.body import json_request_body, read_json
from ostiary.server.context import ServerContext, server_context
from ostiary.server.limits import client_address, limits_of
from ostiary.server.models import MAX_PEM, CertificateAnswer, parse_requested_not_after

router = APIRouter(tags=["attestation"])
Context = Annotated[ServerContext, Depends(server_context)]

#: The largest attestation member accepted (base64 TPM structures and an AK chain).
MAX_ATTESTATION = 32 * 1024


class Attestation(BaseModel):
    """TPM2_Certify of the CSR's key by an attestation key, over a nonce from this CA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nonce: str = Field(min_length=16, max_length=64, description="from POST /attestation/nonce")
    certify_info: str = Field(
        min_length=1, max_length=MAX_ATTESTATION, description="TPMS_ATTEST, base64"
    )
    signature: str = Field(
        min_length=1, max_length=MAX_ATTESTATION, description="TPMT_SIGNATURE by the AK, base64"
    )
    public_area: str = Field(
        min_length=1, max_length=MAX_ATTESTATION, description="the key's TPMT_PUBLIC, base64"
    )
    ak_chain: list[str] = Field(
        min_length=1, max_length=4, description="AK certificate first, DER base64 each"
    )

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class AttestSignRequest(BaseModel):
    """``POST /provisioners/{name}/attest``: a CSR and the attestation of its key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    csr: str = Field(min_length=1, max_length=MAX_PEM, description="PKCS#10 request, PEM")
    attestation: Attestation
    not_after: str | None = Field(
        None, max_length=64, description="requested lifetime ('24h') or end (RFC 3339)"
    )


class NonceAnswer(BaseModel):
    nonce: str
    expires_at: datetime


async def _attest_body(request: Request) -> AttestSignRequest:
    return await read_json(request, AttestSignRequest)


@router.post("/attestation/nonce", status_code=201, response_model=NonceAnswer)
def attestation_nonce(request: Request, context: Context) -> NonceAnswer:
    """A single-use nonce for a TPM attestation (TPM2_Certify extraData).

    404 on a CA with no ``attest`` provisioner; 429 past the per-address limit or while
    too many nonces wait to be spent.
    """
    limits_of(request).nonces.check(client_address(request))
    authority = context.authority
    nonce, expires_at = issue_attestation_nonce(authority.store, now=authority.clock())
    return NonceAnswer(nonce=nonce, expires_at=expires_at)


@router.post(
    "/provisioners/{name}/attest",
    status_code=201,
    response_model=CertificateAnswer,
    openapi_extra=json_request_body(AttestSignRequest),
)
def attest_sign(
    name: str, body: Annotated[AttestSignRequest, Depends(_attest_body)], context: Context
) -> CertificateAnswer:
    """Issue a certificate for a CSR whose key a TPM attested."""
    authority = context.authority
    csr = load_csr(body.csr.encode("utf-8"))
    statement = AttestationStatement.from_json(body.attestation.as_dict())
    authorization = authorize_attest_sign(
        authority.store,
        name,
        statement,
        csr,
        ca=context.ca,
        now=authority.clock(),
        requested_not_after=parse_requested_not_after(body.not_after),
    )
    certificate = authority.issue(
        csr, authorization, actor=f"provisioner:{authorization.provisioner}"
    )
    return CertificateAnswer.of(certificate, context.chain_pem)


__all__ = ["AttestSignRequest", "Attestation", "NonceAnswer", "router"]
