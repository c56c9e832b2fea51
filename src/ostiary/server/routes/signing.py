"""Remote signing over HTTPS: ``sign`` a digest, or get a whole client ``assertion``.

``POST /signing/keys/{name}/sign`` and ``POST /signing/keys/{name}/assertion`` (see
:mod:`ostiary.authority.remote_signing` for the checks and the audit). The caller is the
request's ``Authorization: Bearer`` admin token when there is one, else the mTLS client
certificate, which must be one this CA recorded, not revoked and within its validity (the
store is asked on every request, so a revocation takes effect at once). The caller is
checked before the body is read, and the body is read capped
(:func:`~ostiary.server.body.read_json`).
``GET /signing/metrics`` (admin token) is the Prometheus text exposition of the counters.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from ostiary.authority.remote_signing import Caller, RemoteSigning
from ostiary.core.errors import NotFound, OstiaryError, Unauthorized
from ostiary.core.jws import ALGORITHMS, DEFAULT_ASSERTION_LIFETIME
from ostiary.provisioners import verify_admin_token
from ostiary.server.body import json_request_body, read_json
from ostiary.server.context import ServerContext, server_context
from ostiary.server.credentials import bearer_token, check_peer_certificate, peer_certificate

router = APIRouter(prefix="/signing", tags=["signing"])
Context = Annotated[ServerContext, Depends(server_context)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignDigestRequest(_Request):
    alg: str = Field(min_length=5, max_length=5, description="JWS alg: " + ", ".join(ALGORITHMS))
    digest: str = Field(min_length=1, max_length=128, description="base64url digest to sign")


class SignDigestAnswer(BaseModel):
    kid: str
    alg: str
    signature: str = Field(description="base64url JWS signature value (ES*: raw R||S)")


class AssertionRequest(_Request):
    client_id: str = Field(min_length=1, max_length=512, description="iss and sub")
    audience: str = Field(min_length=1, max_length=512, description="aud: the token endpoint")
    lifetime: int = Field(
        int(DEFAULT_ASSERTION_LIFETIME.total_seconds()),
        ge=1,
        le=24 * 3600,
        description="seconds; at most 600 are granted",
    )
    alg: Literal["PS256", "RS256", "ES256"] | None = Field(
        None, description="default PS256 (RSA keys) or ES256 (P-256 keys)"
    )
    thumbprint: Literal["x5t#S256", "x5t"] = "x5t#S256"
    jti: str | None = Field(None, min_length=16, max_length=128)


class AssertionAnswer(BaseModel):
    kid: str
    assertion: str
    expires_at: int = Field(description="exp of the assertion, seconds since the epoch")
    jti: str


def _signing(context: Context) -> RemoteSigning:
    if context.signing is None:
        raise NotFound("remote signing is not enabled on this server")
    return context.signing


def _caller(request: Request, context: Context) -> Caller:
    """Who asks, checked before the body is read.

    A refusal of a client certificate of this CA (revoked, expired, unknown to the store)
    is audited as ``signing.denied`` (a revoked workload knocking is worth knowing about)
    before it becomes a 401. A request with no credential of this CA (none, or a bad admin
    token) is only counted and logged at most once a minute: anyone can send those, and
    they must not grow the audit log.
    """
    authority = context.authority
    certificate = peer_certificate(request)
    try:
        token = bearer_token(request)
        if token is not None:
            return Caller.from_admin(
                verify_admin_token(authority.store, token, ca=context.ca, now=authority.clock())
            )
        if certificate is None:
            raise Unauthorized("remote signing needs a client certificate (mTLS) or an admin token")
        check_peer_certificate(authority.store, certificate, ca=context.ca, now=authority.clock())
    except OstiaryError as error:
        if context.signing is not None:
            if certificate is None:
                context.signing.count_anonymous_refusal(source=_source(request), error=error)
            else:
                context.signing.audit_refused_caller(
                    Caller.from_certificate(certificate).actor,
                    str(request.path_params.get("name", "")),
                    source=_source(request),
                    error=error,
                )
        raise
    return Caller.from_certificate(certificate)


async def _sign_body(request: Request) -> SignDigestRequest:
    return await read_json(request, SignDigestRequest)


async def _assertion_body(request: Request) -> AssertionRequest:
    return await read_json(request, AssertionRequest)


Signing = Annotated[RemoteSigning, Depends(_signing)]
CallerOf = Annotated[Caller, Depends(_caller)]


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post(
    "/keys/{name}/sign",
    response_model=SignDigestAnswer,
    openapi_extra=json_request_body(SignDigestRequest),
)
def sign_digest(
    name: str,
    request: Request,
    signing: Signing,
    caller: CallerOf,
    body: Annotated[SignDigestRequest, Depends(_sign_body)],
) -> SignDigestAnswer:
    """Sign a digest with the key's current version."""
    result = signing.sign(caller, name, alg=body.alg, digest=body.digest, source=_source(request))
    return SignDigestAnswer(kid=result.kid, alg=result.alg, signature=result.signature)


@router.post(
    "/keys/{name}/assertion",
    response_model=AssertionAnswer,
    openapi_extra=json_request_body(AssertionRequest),
)
def make_assertion(
    name: str,
    request: Request,
    signing: Signing,
    caller: CallerOf,
    body: Annotated[AssertionRequest, Depends(_assertion_body)],
) -> AssertionAnswer:
    """Build and sign an RFC 7523 client assertion."""
    issued = signing.assertion(
        caller,
        name,
        client_id=body.client_id,
        audience=body.audience,
        lifetime=timedelta(seconds=body.lifetime),
        source=_source(request),
        alg=body.alg,
        thumbprint=body.thumbprint,
        jti=body.jti,
    )
    return AssertionAnswer(
        kid=issued.kid,
        assertion=issued.assertion,
        expires_at=int(issued.expires_at.timestamp()),
        jti=issued.jti,
    )


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, signing: Signing, context: Context) -> PlainTextResponse:
    """Prometheus text exposition of the signing counters (admin token)."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("the metrics need an admin token: 'Authorization: Bearer <token>'")
    authority = context.authority
    verify_admin_token(authority.store, token, ca=context.ca, now=authority.clock())
    return PlainTextResponse(
        signing.alerts.metrics.render(), media_type="text/plain; version=0.0.4"
    )
