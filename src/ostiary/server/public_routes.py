"""The routes of the plain-HTTP listener (:mod:`ostiary.server.public_http`): what relying
parties fetch (OCSP, CRLs, CA certificates, roots, the revocation feed, the SSH KRL, SCEP).

:meth:`PublicRoutes.route` answers a parsed :class:`PlainRequest` with a :data:`Routed`: a
reply at once (fixed answers, kept OCSP answers), work for a worker thread (a status read, a
CRL build: CRLs on their own pool so a build of a million entries never holds up OCSP), or a
coroutine of the event loop (:class:`Held`: the feed's long poll). The listener itself,
HTTP/1.1 and connections, is :mod:`ostiary.server.public_http`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.ocsp import OCSPResponseStatus

from ostiary.authority.revocation_feed import MEDIA_TYPE as FEED_MEDIA_TYPE
from ostiary.authority.revocation_feed import FeedQuery
from ostiary.authority.rollover import live_issuers
from ostiary.authority.root_rollover import root_bundle
from ostiary.core.ca import fingerprint_sha256
from ostiary.core.errors import MalformedInput, NotFound
from ostiary.core.ocsp import build_unsuccessful_response, ocsp_request_from_get_path
from ostiary.scep import decode_get_message, parse_query
from ostiary.server.context import ServerContext
from ostiary.server.http1 import Reply, problem
from ostiary.ssh.krl import KRL_MEDIA_TYPE

PKIX_CERT = "application/pkix-cert"
PKIX_CRL = "application/pkix-crl"
PEM_FILE = "application/x-pem-file"
JSON = "application/json"
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
#: Worker threads for OCSP status reads and other short blocking work.
WORKERS = 8
#: Worker threads for CRLs (a build may take seconds; it must not hold up OCSP).
CRL_WORKERS = 2
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_GET = ("GET", "HEAD")
_CRLS = ("/crl", "/crl.pem", "/root.crl")
#: ``/crl/KEYID`` and ``/intermediate/KEYID.crt``: an intermediate's CRL and certificate.
_ROTATED = re.compile(r"/crl/([0-9a-f]{8,128})|/intermediate/([0-9a-f]{8,128})\.crt")
_NO_CACHE = (("Cache-Control", "no-cache"),)


@dataclass(frozen=True, slots=True)
class Held:
    """A request answered by a coroutine of the event loop (the feed's long poll)."""

    answer: Callable[[], Awaitable[Reply]]


#: What a route gives: a reply now, work for a worker thread that returns one, or a coroutine.
Routed = Reply | tuple[ThreadPoolExecutor, Callable[[], Reply]] | Held


@dataclass(slots=True)
class PlainRequest:
    """One request as the listener parsed it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    query: str = ""
    address: str = ""


class PublicRoutes:
    """The routes of the plain-HTTP listener over one :class:`ServerContext`."""

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        material = context.authority.ca
        self._root_pem = material.root.public_bytes(serialization.Encoding.PEM)
        self._root_fingerprint = fingerprint_sha256(material.root)
        #: The answers that never change while the server runs.
        self._fixed = {
            "/health": Reply(200, b'{"status":"ok"}', JSON),
            "/root.crt": Reply(
                200, material.root.public_bytes(serialization.Encoding.DER), PKIX_CERT
            ),
            "/intermediate.crt": Reply(
                200, material.intermediate.public_bytes(serialization.Encoding.DER), PKIX_CERT
            ),
        }
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="public-http")
        self.crl_pool = ThreadPoolExecutor(CRL_WORKERS, thread_name_prefix="public-crl")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.crl_pool.shutdown(wait=False, cancel_futures=True)

    def route(self, request: PlainRequest) -> Routed:
        method, path = request.method, request.path
        if path == "/ocsp" or path.startswith("/ocsp/"):
            return self._ocsp(request)
        if path.startswith("/scep/"):
            return self._scep(request)
        if path == "/revocations":
            return self._revocations(request)
        if path == "/ssh/krl" and self.context.ssh is not None:
            if method not in _GET:
                return _not_allowed(method, path, "GET, HEAD")
            ssh = self.context.ssh
            return self.pool, lambda: Reply(200, ssh.build_krl(), KRL_MEDIA_TYPE, _NO_CACHE)
        fixed = self._fixed.get(path)
        by_fingerprint = path.startswith("/roots/") and path.count("/") == 2
        rotated = _ROTATED.fullmatch(path)  # ostiary.authority.rollover
        if path == "/roots":  # read from the folder: a root rotation shows at once
            if method not in _GET:
                return _not_allowed(method, path, "GET, HEAD")
            material = self.context.authority.ca
            return self.pool, lambda: Reply(200, json.dumps(root_bundle(material)).encode(), JSON)
        if rotated is not None or path == "/intermediates.pem":
            if method not in _GET:
                return _not_allowed(method, path, "GET, HEAD")
            if rotated is None:
                return self.pool, self._live_intermediates
            crl_key_id, certificate_key_id = rotated.groups()
            if crl_key_id is not None:
                etags = _etags(request.headers.get("if-none-match"))
                return self.crl_pool, lambda: self._crl(path, etags, crl_key_id)
            return self.pool, lambda: self._intermediate(certificate_key_id)
        if fixed is None and not by_fingerprint and path not in _CRLS:
            return problem(HTTPStatus.NOT_FOUND, "not-found", f"nothing at {path}")
        if method not in _GET:
            return _not_allowed(method, path, "GET, HEAD")
        if fixed is not None:
            return fixed
        if by_fingerprint:
            given = path[len("/roots/") :]
            return self.pool, lambda: self._root_by_fingerprint(given)
        etags = _etags(request.headers.get("if-none-match"))
        return self.crl_pool, lambda: self._crl(path, etags)

    def _ocsp(self, request: PlainRequest) -> Routed:
        ocsp = self.context.ocsp
        if request.path == "/ocsp":
            if request.method != "POST":
                return _not_allowed(request.method, request.path, "POST")
            media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media_type != OCSP_REQUEST:
                shown = media_type or "none"
                return problem(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    f"the body must be {OCSP_REQUEST}, not {shown}",
                )
            der = request.body
        else:
            if request.method not in _GET:
                return _not_allowed(request.method, request.path, "GET, HEAD")
            try:
                der = ocsp_request_from_get_path(request.path[len("/ocsp/") :])
            except MalformedInput:
                return _ocsp_reply(
                    build_unsuccessful_response(OCSPResponseStatus.MALFORMED_REQUEST)
                )
        hit = ocsp.cached(der)
        if hit is not None:  # costs less than the limit's own check: never limited
            return _ocsp_reply(hit)
        # A miss costs a lookup and a signature: limited per address, generously.
        self.context.limits.ocsp.check(request.address or None)
        return self.pool, lambda: _ocsp_reply(ocsp.respond(der))

    def _revocations(self, request: PlainRequest) -> Routed:
        if request.method not in _GET:
            return _not_allowed(request.method, request.path, "GET, HEAD")
        values = parse_qs(request.query, keep_blank_values=True)

        def one(name: str) -> str | None:
            given = values.get(name)
            return given[-1] if given else None

        query = FeedQuery.parse(one("after"), one("nonce"), one("wait"))
        feed = self.context.feed
        loop = asyncio.get_running_loop()

        async def answer() -> Reply:
            signed = await feed.follow(
                query,
                lambda work: loop.run_in_executor(self.pool, work),
                address=request.address,
            )
            return Reply(200, signed, FEED_MEDIA_TYPE, _NO_CACHE)

        return Held(answer)

    def _scep(self, request: PlainRequest) -> Routed:
        """SCEP (``/scep/NAME[/pkiclient.exe]``): most SCEP clients speak plain HTTP only."""
        scep = self.context.scep
        parts = request.path.split("/")
        if scep is None or len(parts) not in (3, 4) or parts[3:] not in ([], ["pkiclient.exe"]):
            return problem(HTTPStatus.NOT_FOUND, "not-found", f"nothing at {request.path}")
        if request.method not in ("GET", "POST"):
            return _not_allowed(request.method, request.path, "GET, POST")
        operation, message = parse_query(request.query)
        if operation == "PKIOperation":
            self.context.limits.scep_operations.check(request.address or None)
        name, body = parts[2], request.body if request.method == "POST" else None
        now = scep.answer_now(name, operation)  # GetCACaps, GetCACert: no thread needed
        if now is not None:
            return Reply(now.status, now.body, now.content_type)
        per_provisioner = self.context.limits.scep_operations_per_provisioner

        def work() -> Reply:
            der = body
            if operation == "PKIOperation" and body is None and message is not None:
                der = decode_get_message(message)
            answer = scep.answer(name, operation, der, admit=per_provisioner.check)
            return Reply(answer.status, answer.body, answer.content_type)

        return self.pool, work

    def _root_by_fingerprint(self, given: str) -> Reply:
        wanted = unquote(given).strip().lower().replace(":", "")
        if not _FINGERPRINT.fullmatch(wanted):
            raise NotFound("this CA has no root with that SHA-256 fingerprint")
        if wanted == self._root_fingerprint:
            return Reply(200, self._root_pem, PEM_FILE)
        for root in self.context.authority.ca.paths.rotated_roots():
            if fingerprint_sha256(root) == wanted:
                return Reply(200, root.public_bytes(serialization.Encoding.PEM), PEM_FILE)
        raise NotFound("this CA has no root with that SHA-256 fingerprint")

    def _live_intermediates(self) -> Reply:
        issuers = live_issuers(self.context.authority)
        pem = b"".join(i.certificate.public_bytes(serialization.Encoding.PEM) for i in issuers)
        return Reply(200, pem, PEM_FILE, _NO_CACHE)

    def _intermediate(self, key_id: str) -> Reply:
        issuer = self.context.authority.issuers.get(key_id)
        if issuer is None:
            raise NotFound("this CA has no intermediate with that key id")
        return Reply(200, issuer.certificate.public_bytes(serialization.Encoding.DER), PKIX_CERT)

    def _crl(self, path: str, etags: set[str], key_id: str | None = None) -> Reply:
        """A CRL (worker thread: the publisher may have to build one)."""
        if key_id is not None:
            publisher = self.context.crl_of(key_id)
            if publisher is None:
                der = self.context.rotated_root_crl(key_id)  # a root of 'ca root rotate'
                if der is None:
                    raise NotFound("this CA has no intermediate with that key id")
                return _conditional(der, PKIX_CRL, f'"{_number(der):x}"', etags)
            published = publisher.current()
            return _conditional(published.der, PKIX_CRL, f'"{published.number:x}"', etags)
        if path == "/root.crl":
            der = self.context.root_crl.current()
            if der is None:
                raise NotFound("no root CRL has been made yet: it is made when 'ca serve' starts")
            return _conditional(der, PKIX_CRL, f'"{_number(der):x}"', etags)
        published = self.context.crl.current()
        if path == "/crl.pem":
            return _conditional(published.pem, PEM_FILE, f'"{published.number:x}-pem"', etags)
        return _conditional(published.der, PKIX_CRL, f'"{published.number:x}"', etags)


def _number(crl: bytes) -> int:
    found = x509.load_der_x509_crl(crl).extensions.get_extension_for_class(x509.CRLNumber)
    return int(found.value.crl_number)


def _ocsp_reply(der: bytes) -> Reply:
    return Reply(200, der, OCSP_RESPONSE, _NO_CACHE)


def _not_allowed(method: str, path: str, allow: str) -> Reply:
    return problem(
        HTTPStatus.METHOD_NOT_ALLOWED,
        "method-not-allowed",
        f"{method} is not allowed on {path}",
        Allow=allow,
    )


def _conditional(body: bytes, media_type: str, etag: str, etags: set[str]) -> Reply:
    headers = (*_NO_CACHE, ("ETag", etag))
    if etag in etags:
        return Reply(304, b"", None, headers)
    return Reply(200, body, media_type, headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {part.strip().removeprefix("W/") for part in header.split(",")}


__all__ = ["Held", "PlainRequest", "PublicRoutes", "Routed"]
