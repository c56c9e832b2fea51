"""The plain-HTTP listener: what relying parties fetch (OCSP, CRLs, CA certificates, health).

This port answers the requests a fleet makes most (an OCSP check per TLS handshake), so it
is not the FastAPI app: an :class:`asyncio.Protocol` per connection, with httptools (the
llhttp parser) reading HTTP/1.1 and responses written as prepared bytes. A kept OCSP answer
(:meth:`~ostiary.authority.ocsp_service.OcspService.cached`) is written from the event loop
without a thread hop, a database read or a signature; everything that may block (an OCSP
status read from the store, a CRL build of a million entries, the root CRL file) runs in a
worker thread while the connection stops reading, so responses stay in request order.

The same routes and answers as :mod:`ostiary.server.routes.publish` (which still serves
them on the HTTPS listener, from the same OCSP cache and CRL publisher):

- ``GET``/``HEAD`` ``/health``, ``/roots``, ``/roots/{sha256}``, ``/root.crt``,
  ``/intermediate.crt``, ``/crl``, ``/crl.pem``, ``/root.crl`` (the CRLs with an ``ETag``
  and ``304`` for a matching ``If-None-Match``);
- ``POST /ocsp`` (``application/ocsp-request``) and ``GET /ocsp/{base64}`` (RFC 6960 A.1);
- ``GET /revocations?after=N&nonce=R&wait=S``, the signed revocation feed
  (:mod:`ostiary.authority.revocation_feed`): a long poll, held as a task of the event loop
  (no thread waits), cancelled with a 503 when the server stops.

HTTP/1.1 as RFC 9112 asks: persistent connections unless ``Connection: close`` (or HTTP/1.0
without keep-alive; an idle one is closed after :data:`KEEP_ALIVE_SECONDS`, and so is one
whose request head is still coming after one to two of those: slowloris), pipelined
requests answered in order, ``Content-Length`` on every response, ``HEAD`` without a body,
``100 Continue`` when asked. Errors are problem documents
(:mod:`ostiary.server.problems`): 400 for what the parser refuses (then the connection is
closed), 404, 405 with ``Allow``, 413 for a body over
:data:`~ostiary.server.body.MAX_BODY_SIZE` (refused from its ``Content-Length`` before it is
read, or while it streams), 415 for an OCSP body of another media type, 500 (logged) for a
bug, 503 when the database cannot be reached. There is no access log on this port: at
tens of thousands of OCSP requests a second it would cost more than the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qs, unquote

import httptools
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
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.context import ServerContext
from ostiary.server.http1 import Reply, encode, problem, reply_for_error
from ostiary.server.problems import BodyTooLarge, error_response
from ostiary.server.tls_scope import MAX_CONNECTIONS
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
#: Most header lines one request may carry; more is refused (400).
MAX_HEADERS = 100
#: An idle connection (nothing received, no request in progress) is closed after one to
#: two times this many seconds, like uvicorn's keep-alive timeout.
KEEP_ALIVE_SECONDS = 5.0
#: How often :meth:`PublicServer.serve` checks whether it should stop (seconds).
_STOP_POLL = 0.1
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_GET = ("GET", "HEAD")
_CRLS = ("/crl", "/crl.pem", "/root.crl")
#: ``/crl/KEYID`` and ``/intermediate/KEYID.crt``: an intermediate's CRL and certificate.
_ROTATED = re.compile(r"/crl/([0-9a-f]{8,128})|/intermediate/([0-9a-f]{8,128})\.crt")
_NO_CACHE = (("Cache-Control", "no-cache"),)


@dataclass(frozen=True, slots=True)
class _Held:
    """A request answered by a coroutine of the event loop (the feed's long poll)."""

    answer: Callable[[], Awaitable[Reply]]


#: What a route gives: a reply now, work for a worker thread that returns one, or a coroutine.
Routed = Reply | tuple[ThreadPoolExecutor, Callable[[], Reply]] | _Held


@dataclass(slots=True)
class _Request:
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

    def route(self, request: _Request) -> Routed:
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

    def _ocsp(self, request: _Request) -> Routed:
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

    def _revocations(self, request: _Request) -> Routed:
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

        return _Held(answer)

    def _scep(self, request: _Request) -> Routed:
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


async def _await(answer: Callable[[], Awaitable[Reply]], method: str, path: str) -> Reply:
    """Await a held route; an error becomes its problem document."""
    try:
        return await answer()
    except Exception as exc:
        return reply_for_error(exc, method, path)


def _run(work: Callable[[], Reply], method: str, path: str) -> Reply:
    """Run a route's work; an error becomes its problem document, never a dropped connection."""
    try:
        return work()
    except Exception as exc:
        return reply_for_error(exc, method, path)


class _Refused(Exception):
    """The request is refused before it is complete (the reply says why)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _Connection(asyncio.Protocol):
    """One client connection: parse, route, answer in order."""

    def __init__(self, server: PublicServer) -> None:
        self._server = server
        self._routes = server.routes
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[_Request] = deque()
        self._busy = False
        #: Set by every read; the server's sweep clears it, and closes idle connections
        #: that stayed quiet for a whole keep-alive period.
        self.active = True
        #: Sweeps that found this connection inside a request's head: at two, the head
        #: took 5-10 s, too slow (a slowloris client keeps ``active`` set), and it is closed.
        self.head_sweeps: int | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._body: list[bytes] = []
        self._size = 0
        self._address = ""

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self._server.connections) >= self._server.max_connections:
            transport.close()  # at once, as on the HTTPS listener (tls_scope.py)
            return
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self.active = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.reply)
            else:  # pragma: no cover - the callbacks raise nothing else
                self._refuse(problem(HTTPStatus.BAD_REQUEST, "bad-request", "bad request"))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._refuse(
                problem(HTTPStatus.BAD_REQUEST, "bad-request", "the request is not valid HTTP/1.1")
            )
            return
        self._drain()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self.head_sweeps = 0
        self._url = b""
        self._headers = {}
        self._header_count = 0
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_BODY_SIZE:
            raise _Refused(problem(HTTPStatus.BAD_REQUEST, "bad-request", "the URL is too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise _Refused(problem(HTTPStatus.BAD_REQUEST, "bad-request", "too many header lines"))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self.head_sweeps = None
        declared = self._headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_SIZE:
            raise _Refused(_too_large())
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_BODY_SIZE:
            raise _Refused(_too_large())
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        self._queue.append(
            _Request(
                method=self._parser.get_method().decode("ascii", "replace"),
                path=parsed.path.decode("latin-1"),
                headers=self._headers,
                body=b"".join(self._body),
                keep_alive=self._parser.should_keep_alive(),
                query=(parsed.query or b"").decode("latin-1"),
                address=self._address,
            )
        )

    # -- answering

    def _drain(self) -> None:
        while self._queue and not self._busy:
            request = self._queue.popleft()
            try:
                routed = self._routes.route(request)
            except Exception as exc:
                routed = reply_for_error(exc, request.method, request.path)
            if isinstance(routed, Reply):
                self._write(request, routed)
                continue
            self._busy = True
            if self._transport is not None:
                self._transport.pause_reading()
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Reply]
            if isinstance(routed, _Held):
                future = loop.create_task(_await(routed.answer, request.method, request.path))
                self._server.held.add(future)
                future.add_done_callback(self._server.held.discard)
            else:
                pool, work = routed
                future = loop.run_in_executor(pool, _run, work, request.method, request.path)
            future.add_done_callback(functools.partial(self._finish, request))

    def _finish(self, request: _Request, done: asyncio.Future[Reply]) -> None:
        self._busy = False
        if done.cancelled():
            reply = problem(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "the server is stopping")
        else:
            reply = done.result()
        self._write(request, reply)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._drain()

    def _write(self, request: _Request, reply: Reply) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = request.keep_alive and not self._server.stopping
        transport.write(encode(reply, head_only=request.method == "HEAD", close=not keep_alive))
        if not keep_alive:
            transport.close()

    def _refuse(self, reply: Reply) -> None:
        """Answer a request the parser could not finish, and close the connection."""
        self._queue.clear()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not self._busy:
            transport.write(encode(reply, head_only=False, close=True))
        transport.close()

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _too_large() -> Reply:
    return Reply.of(error_response(BodyTooLarge.over(MAX_BODY_SIZE)))


class PublicServer:
    """The plain-HTTP listener on a bound socket, until :meth:`request_stop`."""

    def __init__(
        self,
        context: ServerContext,
        *,
        grace_seconds: float = 10,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.routes = PublicRoutes(context)
        #: Open connections past which a new one is closed at once.
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()
        #: Requests being answered by a coroutine (held feed requests), cancelled at stop.
        self.held: set[asyncio.Future[Reply]] = set()
        self.started = False
        self.should_exit = False
        self.stopping = False
        self._grace = grace_seconds
        self.keep_alive = KEEP_ALIVE_SECONDS

    def request_stop(self) -> None:
        """Ask the server to stop (any thread, or a signal handler)."""
        self.should_exit = True

    def _close_idle(self) -> None:
        """Close the connections that received nothing since the last sweep and wait for
        nothing, and those whose request head is still coming after a whole keep-alive
        period (slowloris). A timer per request would cost every request; a sweep costs none.
        """
        for connection in list(self.connections):
            if connection.head_sweeps is not None:
                connection.head_sweeps += 1
                if connection.head_sweeps >= 2:
                    connection.close()
                    continue
            if connection.active:
                connection.active = False
            elif connection.idle:
                connection.close()

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), sock=sock)
        self.started = True
        swept = loop.time()
        try:
            while not self.should_exit:
                await asyncio.sleep(_STOP_POLL)
                if loop.time() - swept >= self.keep_alive:
                    self._close_idle()
                    swept = loop.time()
        finally:
            self.stopping = True
            server.close()
            for held in list(self.held):
                held.cancel()
            deadline = loop.time() + self._grace
            for connection in list(self.connections):
                if connection.idle:
                    connection.close()
            while any(not c.idle for c in self.connections) and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for connection in list(self.connections):
                connection.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
            self.routes.close()


__all__ = ["PublicRoutes", "PublicServer"]
