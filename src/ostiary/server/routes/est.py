"""EST (RFC 7030) at ``/.well-known/est/NAME/`` on the HTTPS listener (docs/mdm.md).

``NAME`` is an ``est`` provisioner. EST always runs over TLS: ``simpleenroll`` is
authorized by HTTP Basic with a one-time code, or by a TLS client certificate this
provisioner issued; ``simplereenroll`` by the current certificate (mTLS). The answers are
base64 certs-only PKCS#7 (``Content-Transfer-Encoding: base64``). A wrong, used or expired
code is a 401 with ``WWW-Authenticate: Basic``; a body that is no base64 PKCS#10 a 400
problem document; nothing is issued for either. The work is
:mod:`ostiary.provisioners.est`'s; this reads the request and writes the answer.
"""

from __future__ import annotations

from typing import Annotated

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ostiary.core.errors import Unauthorized
from ostiary.est import (
    CSR_ATTRS,
    PKCS7_CERTS_ONLY,
    PKCS7_MIME,
    certs_only_base64,
    csr_attributes_base64,
    read_base64_csr,
)
from ostiary.provisioners.est import (
    EstProvisioner,
    enroll_with_certificate,
    enroll_with_code,
    load_est_provisioner,
)
from ostiary.server.basic_auth import basic_challenge, basic_password
from ostiary.server.body import read_body
from ostiary.server.context import ServerContext, current_context
from ostiary.server.credentials import peer_certificate
from ostiary.server.limits import client_address

router = APIRouter(tags=["est"])
Context = Annotated[ServerContext, Depends(current_context)]

_PREFIX = "/.well-known/est/{name}"
_BASE64 = {"Content-Transfer-Encoding": "base64"}
_REALM = "ostiary-est"
_PKCS10 = ("application/pkcs10",)


def _certs_only(body: bytes, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers=_BASE64)


@router.get(f"{_PREFIX}/cacerts", summary="EST: the CA certificates (RFC 7030 4.1)")
async def est_cacerts(name: str, context: Context) -> Response:
    await run_in_threadpool(load_est_provisioner, context.authority.store, name)
    authority = context.authority
    chain = [authority.issuer.certificate, authority.ca.root]
    unique = list({c.fingerprint(hashes.SHA256()): c for c in chain}.values())
    return _certs_only(certs_only_base64(unique), PKCS7_MIME)


@router.get(f"{_PREFIX}/csrattrs", summary="EST: what the CSR should carry (RFC 7030 4.5)")
async def est_csrattrs(name: str, context: Context) -> Response:
    await run_in_threadpool(load_est_provisioner, context.authority.store, name)
    return Response(csr_attributes_base64(), media_type=CSR_ATTRS, headers=_BASE64)


@router.post(
    f"{_PREFIX}/simpleenroll",
    summary="EST: a certificate for a one-time code (HTTP Basic) or a certificate of ours",
)
async def est_simpleenroll(name: str, request: Request, context: Context) -> Response:
    return await _enroll(name, request, context, operation="simpleenroll")


@router.post(
    f"{_PREFIX}/simplereenroll",
    summary="EST: a new certificate for the current one's names (mTLS, RFC 7030 4.2.2)",
)
async def est_simplereenroll(name: str, request: Request, context: Context) -> Response:
    return await _enroll(name, request, context, operation="simplereenroll")


async def _enroll(name: str, request: Request, context: Context, *, operation: str) -> Response:
    """A code is under the per-address limit on refused credentials (as ``/sign``): an
    address past it is refused (429) before its code is looked at; only a refused code
    counts (a request without one, the 401 that makes a client send it, never does). Every
    enrollment with a credential also takes from the provisioner's budget (all addresses
    together), once the provisioner is found.
    """
    refused = context.limits.failed_tokens
    address = client_address(request)
    try:
        code = basic_password(request) if operation == "simpleenroll" else None
        if code is not None:
            refused.admit(address)
        current = peer_certificate(request)
        if code is None and current is None:
            raise Unauthorized(
                "send the one-time code as the HTTP Basic password, or connect with a "
                "certificate of this CA (mTLS)"
                if operation == "simpleenroll"
                else "re-enrollment needs the current certificate: connect with it (mTLS)"
            )
        csr = read_base64_csr(await read_body(request, media_types=_PKCS10))
        provisioner = await run_in_threadpool(load_est_provisioner, context.authority.store, name)
        context.limits.est_enrollments_per_provisioner.check(provisioner.name)
        try:
            certificate = await run_in_threadpool(
                _issue, context, provisioner, csr, code, current, operation
            )
        except Unauthorized:
            if code is not None:  # the code was refused (wrong, spent, expired)
                refused.count(address)
            raise
    except Unauthorized as exc:
        return basic_challenge(exc, _REALM)
    return _certs_only(certs_only_base64([certificate]), PKCS7_CERTS_ONLY)


def _issue(
    context: ServerContext,
    provisioner: EstProvisioner,
    csr: x509.CertificateSigningRequest,
    code: str | None,
    current: x509.Certificate | None,
    operation: str,
) -> x509.Certificate:
    if code is not None:
        return enroll_with_code(context.authority, provisioner, code, csr, ca=context.ca)
    if current is None:  # guarded by the caller; kept for the type checker
        raise Unauthorized("no credential")
    return enroll_with_certificate(
        context.authority, provisioner, current, csr, ca=context.ca, operation=operation
    )
