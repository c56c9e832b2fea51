"""What relying parties fetch, over HTTPS and plain HTTP: CA certificates, CRLs, OCSP.

- ``/root.crt``, ``/intermediate.crt``: DER, ``application/pkix-cert`` (RFC 2585 section 4.1,
  RFC 5280 section 4.2.2.1 caIssuers).
- ``/crl`` (DER, ``application/pkix-crl``, RFC 2585 section 4.2) and ``/crl.pem``: the
  issuing CA's current CRL (:class:`~ostiary.authority.publisher.CrlPublisher`, never stale);
  ``/root.crl``: the root's CRL, made offline. Each carries an ``ETag`` (the CRL number), so a
  conditional GET costs no transfer.
- ``/ocsp``: RFC 6960 appendix A.1, POST with ``application/ocsp-request`` or GET with the
  base64 request in the path; always ``application/ocsp-response`` with HTTP 200, a malformed
  request included (it gets the ``malformedRequest`` status, section 2.3).
- ``/revocations``: the signed revocation feed
  (:mod:`ostiary.authority.revocation_feed`), a long poll; the same answers as on the
  plain-HTTP listener.

Nothing here is cached by intermediaries (``Cache-Control: no-cache``): a revocation must show
at the next fetch.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends, Request, Response

from ostiary.authority.revocation_feed import MEDIA_TYPE as FEED_MEDIA_TYPE
from ostiary.authority.revocation_feed import FeedQuery
from ostiary.authority.rollover import live_issuers
from ostiary.authority.root_rollover import root_bundle
from ostiary.core.ca import fingerprint_sha256
from ostiary.core.errors import NotFound
from ostiary.server.body import read_body
from ostiary.server.context import ServerContext, server_context
from ostiary.server.models import Health, Roots

PKIX_CERT = "application/pkix-cert"
PKIX_CRL = "application/pkix-crl"
PEM_FILE = "application/x-pem-file"
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
_NO_CACHE = {"Cache-Control": "no-cache"}
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")

router = APIRouter(tags=["public"])
Context = Annotated[ServerContext, Depends(server_context)]


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up and answering."""
    # A coroutine: FastAPI runs a plain ``def`` in its thread pool, and the thread switch
    # would be most of the cost of a probe that load balancers send every few seconds.
    return Health()


@router.get("/roots", response_model=Roots)
def roots(context: Context) -> Roots:
    """The CA's root certificates and the cross-certificates between them (PEM)."""
    return Roots(**root_bundle(context.authority.ca))


@router.get(
    "/roots/{sha256}",
    response_class=Response,
    responses={200: {"content": {PEM_FILE: {}}}},
)
def root_by_fingerprint(sha256: str, context: Context) -> Response:
    """The root with this SHA-256 fingerprint (hex; colons and case ignored), PEM.

    For bootstrap: a client that was told the fingerprint out of band fetches the root and
    checks the fingerprint itself.
    """
    wanted = sha256.strip().lower().replace(":", "")
    found = [r for r in context.authority.ca.roots if fingerprint_sha256(r) == wanted]
    if not _FINGERPRINT.fullmatch(wanted) or not found:
        raise NotFound("this CA has no root with that SHA-256 fingerprint")
    root = found[0]
    return Response(_pem(root), media_type=PEM_FILE)


@router.get("/root.crt", response_class=Response, responses={200: {"content": {PKIX_CERT: {}}}})
def root_certificate(context: Context) -> Response:
    """The root certificate, DER."""
    return Response(_der(context.authority.ca.root), media_type=PKIX_CERT)


@router.get(
    "/intermediate.crt", response_class=Response, responses={200: {"content": {PKIX_CERT: {}}}}
)
def intermediate_certificate(context: Context) -> Response:
    """The issuing CA certificate, DER (the caIssuers URL of every leaf)."""
    return Response(_der(context.authority.ca.intermediate), media_type=PKIX_CERT)


@router.get("/crl", response_class=Response, responses={200: {"content": {PKIX_CRL: {}}}})
def crl(request: Request, context: Context) -> Response:
    """The issuing CA's current, complete CRL, DER (the CDP of every leaf)."""
    published = context.crl.current()
    return _conditional(request, published.der, PKIX_CRL, etag=f'"{published.number:x}"')


@router.get("/crl/{key_id}", response_class=Response, responses={200: {"content": {PKIX_CRL: {}}}})
def crl_of(key_id: str, request: Request, context: Context) -> Response:
    """The current CRL of the intermediate with this key id (hex), DER: the CDP of the
    leaves of an intermediate made by ``ca intermediate rotate``.
    """
    publisher = context.crl_of(key_id.lower())
    if publisher is None:
        der = context.rotated_root_crl(key_id.lower())  # a root of 'ca root rotate'
        if der is None:
            raise NotFound("this CA has no intermediate with that key id")
        return _conditional(request, der, PKIX_CRL, etag=_crl_etag(der))
    published = publisher.current()
    return _conditional(request, published.der, PKIX_CRL, etag=f'"{published.number:x}"')


@router.get(
    "/intermediate/{key_id}.crt",
    response_class=Response,
    responses={200: {"content": {PKIX_CERT: {}}}},
)
def intermediate_of(key_id: str, context: Context) -> Response:
    """The intermediate with this key id (hex), DER (the caIssuers URL of its leaves)."""
    issuer = context.authority.issuers.get(key_id.lower())
    if issuer is None:
        raise NotFound("this CA has no intermediate with that key id")
    return Response(_der(issuer.certificate), media_type=PKIX_CERT)


@router.get(
    "/intermediates.pem", response_class=Response, responses={200: {"content": {PEM_FILE: {}}}}
)
def live_intermediates(context: Context) -> Response:
    """Every intermediate relying parties must trust now (the issuing one first, then the
    retiring ones whose leaves are still out), PEM: for trust bundles (``ca crl-watch
    --bundle-out``). Check them against the root you trust: this is no trust anchor.
    """
    issuers = live_issuers(context.authority)
    return Response(
        "".join(_pem(i.certificate) for i in issuers), media_type=PEM_FILE, headers=_NO_CACHE
    )


@router.get("/crl.pem", response_class=Response, responses={200: {"content": {PEM_FILE: {}}}})
def crl_pem(request: Request, context: Context) -> Response:
    """The same CRL, PEM."""
    published = context.crl.current()
    return _conditional(request, published.pem, PEM_FILE, etag=f'"{published.number:x}-pem"')


@router.get("/root.crl", response_class=Response, responses={200: {"content": {PKIX_CRL: {}}}})
def root_crl(request: Request, context: Context) -> Response:
    """The root's CRL (revoked intermediates), DER (the CDP of the intermediate)."""
    der = context.root_crl.current()
    if der is None:
        raise NotFound("no root CRL has been made yet: it is made when 'ca serve' starts")
    return _conditional(request, der, PKIX_CRL, etag=_crl_etag(der))


def _crl_etag(der: bytes) -> str:
    number = x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber)
    return f'"{number.value.crl_number:x}"'


@router.get(
    "/revocations", response_class=Response, responses={200: {"content": {FEED_MEDIA_TYPE: {}}}}
)
async def revocations(
    request: Request,
    context: Context,
    after: str | None = None,
    nonce: str | None = None,
    wait: str | None = None,
) -> Response:
    """Revocations after position ``after`` as one JWS signed by the issuing CA, held up to
    ``wait`` seconds while there are none.
    """
    query = FeedQuery.parse(after, nonce, wait)
    loop = asyncio.get_running_loop()

    def run(work: Callable[[], Any]) -> asyncio.Future[Any]:
        return loop.run_in_executor(None, work)

    address = request.client.host if request.client is not None else ""
    signed = await context.feed.follow(query, run, address=address)
    return Response(signed, media_type=FEED_MEDIA_TYPE, headers=_NO_CACHE)


async def _ocsp_body(request: Request) -> bytes:
    return await read_body(request, media_types=(OCSP_REQUEST,))


@router.post(
    "/ocsp",
    response_class=Response,
    responses={200: {"content": {OCSP_RESPONSE: {}}}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {OCSP_REQUEST: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def ocsp_post(body: Annotated[bytes, Depends(_ocsp_body)], context: Context) -> Response:
    """RFC 6960 OCSP over POST (appendix A.1)."""
    return Response(context.ocsp.respond(body), media_type=OCSP_RESPONSE, headers=_NO_CACHE)


@router.get(
    "/ocsp/{encoded:path}",
    response_class=Response,
    responses={200: {"content": {OCSP_RESPONSE: {}}}},
)
def ocsp_get(encoded: str, context: Context) -> Response:
    """RFC 6960 OCSP over GET: the DER request, base64 then URL-encoded (appendix A.1)."""
    answer = context.ocsp.respond_to_get(encoded)
    return Response(answer, media_type=OCSP_RESPONSE, headers=_NO_CACHE)


def _conditional(request: Request, body: bytes, media_type: str, *, etag: str) -> Response:
    headers = {**_NO_CACHE, "ETag": etag}
    if etag in _etags(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {part.strip().removeprefix("W/") for part in header.split(",")}


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
