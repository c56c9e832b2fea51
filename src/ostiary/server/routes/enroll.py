"""Getting, renewing and revoking certificates (HTTPS only).

- ``POST /sign``: a CSR (RFC 2986) and a one-time token; the provisioner that made the token
  authorizes (:func:`ostiary.provisioners.verify_sign_token`, provisioners from memory) and
  :meth:`Authority.issue` issues, then spends the token (once across all replicas), records
  and audits in one transaction.
- ``POST /renew``: the holder of a current certificate (mTLS or a holder token) gets a new one
  for the same key, or for a new key with a CSR; audited as ``certificate.renewed``.
- ``POST /revoke``: the holder (only its own certificate, and only for the reasons a holder
  may state) or an admin; shows at once in OCSP and the next CRL (RFC 5280 section 5.3.1
  reasons).

Handlers are plain ``def``: FastAPI runs them in its thread pool, so database work and
signing never block the event loop; ``POST /sign``, the hot path, is the exception (see
:func:`sign`: a coroutine the server calls without FastAPI's per-request machinery). Bodies
are read by :mod:`ostiary.server.body` first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from cryptography import x509
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ostiary.authority.authority import Authority
from ostiary.core.encoding import load_csr, parse_serial, serial_hex
from ostiary.core.errors import OstiaryError, PolicyDenied, TokenReused, Unauthorized
from ostiary.core.issuance import Authorization
from ostiary.provisioners import (
    renewal_authorization,
    sign_token_spend,
    verify_admin_token,
    verify_holder_token,
    verify_sign_token,
)
from ostiary.provisioners.attest import attestation_for, with_attestation
from ostiary.provisioners.base import TokenGrant
from ostiary.provisioners.tokens import ProvisionerNotInMemory
from ostiary.server.body import JSON, json_request_body, parse_json, read_body, read_json
from ostiary.server.context import ServerContext, current_context, server_context
from ostiary.server.credentials import (
    Holder,
    bearer_token,
    check_peer_certificate,
    peer_certificate,
    token_carries_certificate,
)
from ostiary.server.limits import client_address
from ostiary.server.models import (
    HOLDER_REASONS,
    CertificateAnswer,
    RenewRequest,
    RevokeAnswer,
    RevokeRequest,
    SignRequest,
    parse_reason,
    parse_requested_not_after,
)
from ostiary.store import WRITE_DEADLINE

router = APIRouter(tags=["enrollment"])
T = TypeVar("T")
Context = Annotated[ServerContext, Depends(current_context)]


async def _renew_body(request: Request) -> RenewRequest:
    return await read_json(request, RenewRequest)


async def _revoke_body(request: Request) -> RevokeRequest:
    return await read_json(request, RevokeRequest)


# On the HTTPS listener, the protocol calls sign_answer directly (ostiary.server.api_http);
# what reaches the app is served by DirectRoute (ostiary.server.app), ahead of FastAPI's
# routing and request handling: so the endpoint takes the bare request, reads its own body
# and serializes its own answer. The route below documents it (the response model is the
# schema) and answers the other methods.
@router.post(
    "/sign",
    status_code=201,
    response_model=CertificateAnswer,
    openapi_extra=json_request_body(SignRequest),
)
async def sign(request: Request) -> Response:
    """Issue a certificate for a CSR authorized by a one-time token."""
    body = await read_body(request, media_types=(JSON,))
    answer = await sign_answer(server_context(request), body, client_address(request))
    return Response(answer, status_code=201, media_type=JSON)


async def sign_answer(context: ServerContext, body: bytes, address: str | None = None) -> bytes:
    """The work of ``POST /sign`` on a body already read: the JSON answer (201).

    Called by :func:`sign` and, on the HTTPS listener, straight from the HTTP protocol
    (:mod:`ostiary.server.api_http`), which checks the media type and size as
    :func:`~ostiary.server.body.read_body` does. A coroutine, unlike the other handlers:
    the checks and the signature take less time than a switch to a worker thread, and the
    record waits for its group commit without holding a thread
    (:meth:`Authority.issue_async`), at most :data:`~ostiary.store.WRITE_DEADLINE` from the
    request's start (503 past it). The provisioner comes from memory; every few seconds its
    row is looked at again, in a worker thread (a database that does not answer would stall
    the loop and every request on it).

    An ``address`` (the TCP peer) whose tokens were refused too often is refused (429)
    before its token is looked at (:attr:`Limits.failed_tokens
    <ostiary.server.limits.Limits.failed_tokens>`); a good token never counts.
    """
    started = time.monotonic()
    refused_tokens = context.limits.failed_tokens
    refused_tokens.admit(address)
    payload = parse_json(body, SignRequest)
    authority = context.authority
    csr = load_csr(payload.csr.encode("utf-8"))
    requested = parse_requested_not_after(payload.not_after)

    def verify(in_memory_only: bool) -> TokenGrant:
        return verify_sign_token(
            authority.store,
            payload.token,
            csr,
            ca=context.ca,
            now=authority.clock(),
            requested_not_after=requested,
            provisioners=context.provisioners,
            in_memory_only=in_memory_only,
        )

    try:
        try:
            grant = verify(True)
        except ProvisionerNotInMemory:
            grant = await run_in_threadpool(verify, False)
    except OstiaryError as exc:
        refused_tokens.count(address)
        if context.metrics is not None:  # no provisioner we may trust: the token failed
            context.metrics.count_denial(None, exc.code)
        raise
    authorization = grant.authorization
    if grant.requires_attestation or payload.attestation is not None:
        # Every attestation check before anything is spent; the nonce, then the token with
        # the certificate (docs/tpm.md). Parsing, chain checks and the nonce's write run in a
        # worker thread: this path is rare, and the loop must not wait on them.
        authorization = await run_in_threadpool(
            _attested, authority, grant.provisioner, payload.attestation, csr, authorization
        )
    try:
        certificate = await authority.issue_async(
            csr,
            authorization,
            actor=f"provisioner:{grant.provisioner}",
            token=sign_token_spend(grant),
            deadline=started + WRITE_DEADLINE,
        )
    except TokenReused:
        refused_tokens.count(address)
        raise
    return (
        CertificateAnswer.of(certificate, context.chain_of(certificate)).model_dump_json().encode()
    )


def _attested(
    authority: Authority,
    provisioner: str,
    attestation: dict[str, Any] | None,
    csr: x509.CertificateSigningRequest,
    authorization: Authorization,
) -> Authorization:
    checked = attestation_for(authority.store, provisioner, attestation, csr, now=authority.clock())
    return with_attestation(authority.store, authorization, checked, now=authority.clock())


@router.post(
    "/renew",
    status_code=201,
    response_model=CertificateAnswer,
    openapi_extra=json_request_body(RenewRequest),
)
def renew(
    request: Request, body: Annotated[RenewRequest, Depends(_renew_body)], context: Context
) -> CertificateAnswer:
    """Renew the caller's certificate: same key (empty body) or a new key (``csr``)."""
    authority = context.authority
    holder = _holder(request, context, purpose="renew")
    csr = load_csr(body.csr.encode("utf-8")) if body.csr is not None else None
    authorization, public_key = renewal_authorization(
        authority.store, holder.certificate, now=authority.clock(), csr=csr, ca=context.ca
    )
    certificate = authority.renew(
        holder.certificate,
        authorization,
        public_key,
        actor=holder.actor,
        csr=csr,
        details={"via": holder.via},
    )
    return CertificateAnswer.of(certificate, context.chain_of(certificate))


@router.post("/revoke", response_model=RevokeAnswer, openapi_extra=json_request_body(RevokeRequest))
def revoke(
    request: Request, body: Annotated[RevokeRequest, Depends(_revoke_body)], context: Context
) -> RevokeAnswer:
    """Revoke a certificate: its holder (itself only) or an admin."""
    authority = context.authority
    serial = parse_serial(body.serial_number)
    reason = parse_reason(body.reason)
    token = bearer_token(request)
    if token is not None and not _token_checked(
        request, context, lambda: token_carries_certificate(token)
    ):
        actor = _token_checked(
            request,
            context,
            lambda: verify_admin_token(
                authority.store, token, ca=context.ca, now=authority.clock()
            ),
        )
    else:
        holder = _holder(request, context, purpose="revoke")
        if holder.certificate.serial_number != serial:
            raise PolicyDenied(
                "a certificate holder may only revoke its own certificate "
                f"({serial_hex(holder.certificate.serial_number)})",
                serial_number=serial_hex(serial),
            )
        if reason not in HOLDER_REASONS:
            allowed = ", ".join(sorted(r.value for r in HOLDER_REASONS))
            raise PolicyDenied(
                f"a holder may not state the reason {reason.value}; use one of {allowed}",
                reason=reason.value,
            )
        actor = holder.actor
    authority.revoke(serial, reason=reason, actor=actor)
    return RevokeAnswer(serial_number=serial_hex(serial))


def _token_checked(request: Request, context: ServerContext, verify: Callable[[], T]) -> T:
    """``verify()`` of a Bearer token, under the per-address limit on refused tokens (as
    ``/sign``): an address past it is refused (429) first; only a refusal counts.
    """
    return context.limits.failed_tokens.guard(client_address(request), verify)


def _holder(request: Request, context: ServerContext, *, purpose: str) -> Holder:
    """The holder proven by a Bearer holder token, else by the mTLS certificate."""
    authority = context.authority
    now = authority.clock()
    token = bearer_token(request)
    if token is not None:
        certificate: x509.Certificate = _token_checked(
            request,
            context,
            lambda: verify_holder_token(
                authority.store,
                token,
                purpose="renew" if purpose == "renew" else "revoke",
                ca=context.ca,
                now=now,
            ),
        )
        return Holder(certificate, via="token")
    certificate_or_none = peer_certificate(request)
    if certificate_or_none is None:
        raise Unauthorized(
            f"to {purpose}, connect with the certificate (mTLS) or send "
            "'Authorization: Bearer <token signed by its key>'"
        )
    if purpose == "revoke":
        # Renewal checks the certificate itself (renewal_authorization), with its own rules
        # for expired certificates; revocation needs a current certificate of ours.
        check_peer_certificate(authority.store, certificate_or_none, ca=context.ca, now=now)
    return Holder(certificate_or_none, via="mtls")
