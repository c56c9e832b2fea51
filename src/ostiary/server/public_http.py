"""The plain-HTTP listener: what relying parties fetch (OCSP, CRLs, CA certificates, health).

This port answers the requests a fleet makes most (an OCSP check per TLS handshake), so it
is not the FastAPI app: an :class:`asyncio.Protocol` per connection, with httptools (the
llhttp parser) reading HTTP/1.1 and responses written as prepared bytes. A kept OCSP answer
(:meth:`~ostiary.authority.ocsp_service.OcspService.cached`) is written from the event loop
without a thread hop, a database read or a signature; everything that may block (an OCSP
status read from the store, a CRL build of a million entries, the root CRL file) runs in a
worker thread while the connection stops reading, so responses stay in request order.

The routes (:mod:`ostiary.server.public_routes`) are the same as
:mod:`ostiary.server.routes.publish` (which still serves them on the HTTPS listener, from
the same OCSP cache and CRL publisher):

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
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.context import ServerContext
from ostiary.server.http1 import Reply, encode, problem, reply_for_error
from ostiary.server.problems import BodyTooLarge, error_response
from ostiary.server.public_routes import Held, PlainRequest, PublicRoutes
from ostiary.server.tls_scope import MAX_CONNECTIONS

#: Most header lines one request may carry; more is refused (400).
MAX_HEADERS = 100
#: An idle connection (nothing received, no request in progress) is closed after one to
#: two times this many seconds, like uvicorn's keep-alive timeout.
KEEP_ALIVE_SECONDS = 5.0
#: How often :meth:`PublicServer.serve` checks whether it should stop (seconds).
_STOP_POLL = 0.1


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
        self._queue: deque[PlainRequest] = deque()
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
            PlainRequest(
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
            if isinstance(routed, Held):
                future = loop.create_task(_await(routed.answer, request.method, request.path))
                self._server.held.add(future)
                future.add_done_callback(self._server.held.discard)
            else:
                pool, work = routed
                future = loop.run_in_executor(pool, _run, work, request.method, request.path)
            future.add_done_callback(functools.partial(self._finish, request))

    def _finish(self, request: PlainRequest, done: asyncio.Future[Reply]) -> None:
        self._busy = False
        if done.cancelled():
            reply = problem(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "the server is stopping")
        else:
            reply = done.result()
        self._write(request, reply)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._drain()

    def _write(self, request: PlainRequest, reply: Reply) -> None:
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


__all__ = ["PublicServer"]
