"""Sign in with an OpenID provider, get a certificate (HTTPS only; see ``docs/api.md``).

- ``GET /provisioners/{name}``: what a client needs to start the sign-in (provider
  endpoints, client id, scopes, who redeems the code); never a secret.
- ``POST /provisioners/{name}/token``: for a confidential app only, the CA redeems the
  client's authorization code (with its PKCE verifier) with the client secret it alone
  holds, and returns the ID token.
- ``POST /provisioners/{name}/sign``: a CSR and an ID token whose nonce was made for the
  CSR's key (:mod:`ostiary.provisioners.oidc_binding`); the ID token is spent once.

A separate path rather than a second body shape of ``POST /sign`` keeps that endpoint's
contract (``csr`` + one-time ``token``) exact for existing clients.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ostiary.core.encoding import load_csr
from ostiary.core.errors import BadRequest, NotFound, PolicyDenied
from ostiary.provisioners.attest import attestation_for, with_attestation
from ostiary.provisioners.base import validate_provisioner_name
from ostiary.provisioners.oidc import OIDC_TYPE, authorize_oidc_sign, find_oidc_provisioner
from ostiary.provisioners.oidc_code_exchange import redeem_code
from ostiary.server.body import json_request_body, read_json
from ostiary.server.context import ServerContext, server_context
from ostiary.server.models import MAX_PEM, MAX_TOKEN, CertificateAnswer, parse_requested_not_after
from ostiary.server.routes.attest import Attestation

router = APIRouter(tags=["oidc"])
Context = Annotated[ServerContext, Depends(server_context)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OIDCSignRequest(_Request):
    """``POST /provisioners/{name}/sign``: a CSR and the ID token of the sign-in."""

    csr: str = Field(min_length=1, max_length=MAX_PEM, description="PKCS#10 request, PEM")
    id_token: str = Field(min_length=1, max_length=MAX_TOKEN, description="OpenID ID token")
    not_after: str | None = Field(
        None, max_length=64, description="requested lifetime ('24h') or end (RFC 3339)"
    )
    attestation: Attestation | None = Field(
        None, description="TPM attestation of the CSR's key, when the provisioner requires it"
    )


class CodeRedemption(_Request):
    """``POST /provisioners/{name}/token``: the code the provider sent to the loopback."""

    code: str = Field(min_length=1, max_length=4096)
    code_verifier: str = Field(
        min_length=43, max_length=128, pattern=r"^[A-Za-z0-9._~-]+$", description="RFC 7636 4.1"
    )
    redirect_uri: str = Field(min_length=1, max_length=256)


class IDTokenAnswer(BaseModel):
    id_token: str


class ProvisionerPublicInfo(BaseModel):
    """The public facts of an ``oidc`` provisioner."""

    name: str
    type: str
    configuration_endpoint: str
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    client_id: str
    scopes: list[str]
    code_exchange: str = Field(description="'client' (public app) or 'ca' (confidential app)")
    profile: str


async def _sign_body(request: Request) -> OIDCSignRequest:
    return await read_json(request, OIDCSignRequest)


async def _code_body(request: Request) -> CodeRedemption:
    return await read_json(request, CodeRedemption)


def _provisioner_name(name: str) -> str:
    try:
        return validate_provisioner_name(name)
    except BadRequest:
        raise NotFound("no such provisioner") from None


@router.get("/provisioners/{name}", response_model=ProvisionerPublicInfo)
def provisioner_info(name: str, context: Context) -> dict[str, Any]:
    """How to sign in for a certificate from the ``oidc`` provisioner ``name``."""
    store = context.authority.store
    try:
        provisioner = find_oidc_provisioner(store, _provisioner_name(name))
    except PolicyDenied:
        raise NotFound(f"provisioner {name!r} is not of type {OIDC_TYPE!r}", name=name) from None
    return provisioner.public_info()


@router.post(
    "/provisioners/{name}/token",
    response_model=IDTokenAnswer,
    openapi_extra=json_request_body(CodeRedemption),
)
def redeem(
    name: str, body: Annotated[CodeRedemption, Depends(_code_body)], context: Context
) -> IDTokenAnswer:
    """Redeem an authorization code with the confidential app's secret; the ID token."""
    store = context.authority.store
    try:
        provisioner = find_oidc_provisioner(store, _provisioner_name(name))
    except PolicyDenied:
        raise NotFound(f"provisioner {name!r} is not of type {OIDC_TYPE!r}", name=name) from None
    id_token = redeem_code(
        provisioner,
        code=body.code,
        code_verifier=body.code_verifier,
        redirect_uri=body.redirect_uri,
    )
    return IDTokenAnswer(id_token=id_token)


@router.post(
    "/provisioners/{name}/sign",
    status_code=201,
    response_model=CertificateAnswer,
    openapi_extra=json_request_body(OIDCSignRequest),
)
def sign(
    name: str, body: Annotated[OIDCSignRequest, Depends(_sign_body)], context: Context
) -> CertificateAnswer:
    """Issue a certificate for a CSR authorized by an OpenID sign-in."""
    authority = context.authority
    csr = load_csr(body.csr.encode("utf-8"))
    attestation = body.attestation.as_dict() if body.attestation is not None else None
    hardware = attestation_for(authority.store, name, attestation, csr, now=authority.clock())
    authorization = authorize_oidc_sign(
        authority.store,
        name,
        body.id_token,
        csr,
        ca=context.ca,
        now=authority.clock(),
        requested_not_after=parse_requested_not_after(body.not_after),
    )
    authorization = with_attestation(
        authority.store, authorization, hardware, now=authority.clock()
    )
    certificate = authority.issue(
        csr, authorization, actor=f"provisioner:{authorization.provisioner}"
    )
    return CertificateAnswer.of(certificate, context.chain_of(certificate))


__all__ = ["CodeRedemption", "IDTokenAnswer", "OIDCSignRequest", "ProvisionerPublicInfo", "router"]
