"""TPM key attestation (HTTPS only; see ``docs/api.md`` and ``docs/tpm.md``).

- ``POST /attestation/nonce``: a fresh nonce, stored for single use, valid five minutes; the
  client's TPM certifies its new key over it (TPM2_Certify ``extraData``). Only on a CA
  with an ``attest`` provisioner, limited per client address and in number
  (:mod:`ostiary.server.limits`).
- ``POST /provisioners/{name}/attest``: a CSR and the attestation statement; the ``attest``
  provisioner ``name`` verifies it (:mod:`ostiary.provisioners.attest`), spends the nonce and
  the certificate is issued for the device its attestation key was certified for, with the
  provisioner's hardware-key policy OID.

- ``POST /attestation/ak``: the TPM's EK certificate chain and the EK's and AK's public
  areas; checked against the manufacturers' EK roots, answered with a MakeCredential
  challenge (:mod:`ostiary.authority.attestation_ca`).
- ``POST /attestation/ak/certificate``: the same and the secret ActivateCredential gave;
  the AK certificate (tcg-kp-AIKCertificate), for ``attest`` provisioners to chain to.

The ``attestation`` member has the same shape wherever a provisioner requires attestation
(``POST /sign``, ``POST /provisioners/{name}/sign``).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ostiary.authority.attestation_ca import AKEnrollment, AttestationKeyCA
from ostiary.core.encoding import load_csr
from ostiary.provisioners.attest import AttestationStatement, authorize_attest_sign
from ostiary.provisioners.attestation_nonces import issue_attestation_nonce
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


class AKRequest(BaseModel):
    """``POST /attestation/ak``: what identifies the TPM and its attestation key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ek_chain: list[str] = Field(
        min_length=1, max_length=4, description="EK certificate first, DER base64 each"
    )
    ek_public: str = Field(min_length=1, max_length=8192, description="EK TPMT_PUBLIC, base64")
    ak_public: str = Field(min_length=1, max_length=8192, description="AK TPMT_PUBLIC, base64")

    def enrollment(self) -> AKEnrollment:
        return AKEnrollment.from_base64(self.ek_chain, self.ek_public, self.ak_public)


class AKAnswer(AKRequest):
    """``POST /attestation/ak/certificate``: the request again, and the activated secret."""

    secret: str = Field(min_length=1, max_length=128, description="ActivateCredential, base64")


class AKChallengeAnswer(BaseModel):
    credential_blob: str = Field(description="TPM2B_ID_OBJECT, base64")
    encrypted_secret: str = Field(description="TPM2B_ENCRYPTED_SECRET, base64")
    expires_at: datetime


async def _ak_body(request: Request) -> AKRequest:
    return await read_json(request, AKRequest)


async def _ak_answer_body(request: Request) -> AKAnswer:
    return await read_json(request, AKAnswer)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@router.post(
    "/attestation/ak",
    status_code=201,
    response_model=AKChallengeAnswer,
    openapi_extra=json_request_body(AKRequest),
)
def attestation_key_challenge(
    body: Annotated[AKRequest, Depends(_ak_body)], context: Context
) -> AKChallengeAnswer:
    """A MakeCredential challenge that only the TPM holding this EK and AK can open."""
    authority = context.authority
    ca = AttestationKeyCA.of(authority)
    challenge = ca.challenge(body.enrollment(), now=authority.clock())
    return AKChallengeAnswer(
        credential_blob=_b64(challenge.credential_blob),
        encrypted_secret=_b64(challenge.encrypted_secret),
        expires_at=challenge.expires_at,
    )


@router.post(
    "/attestation/ak/certificate",
    status_code=201,
    response_model=CertificateAnswer,
    openapi_extra=json_request_body(AKAnswer),
)
def attestation_key_certificate(
    body: Annotated[AKAnswer, Depends(_ak_answer_body)], context: Context
) -> CertificateAnswer:
    """The AK certificate, once the TPM opened the challenge (ActivateCredential)."""
    authority = context.authority
    ca = AttestationKeyCA.of(authority)
    secret = AKEnrollment.secret_from_base64(body.secret)
    certificate = ca.certify(body.enrollment(), secret, now=authority.clock())
    return CertificateAnswer.of(certificate, context.chain_of(certificate))


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
    return CertificateAnswer.of(certificate, context.chain_of(certificate))


__all__ = ["AKAnswer", "AKRequest", "AttestSignRequest", "Attestation", "NonceAnswer", "router"]
