"""The HTTP reverse proxy after the handshake: the client's side, an asyncio Protocol with
httptools (llhttp), in front of a pool of keep-alive upstream connections
(:mod:`ostiary.gateway.upstream`).

Per request the work is small: the target is put in its canonical form
(:mod:`ostiary.gateway.target`; a plain one is checked by one match) and the route rules are
checked on it, the parsed header list is filtered (:mod:`ostiary.gateway.headers`: identity,
forwarding and hop-by-hop headers dropped, and any name with ``_``), the connection's
identity block (computed once per client connection) is appended, and the head is written to
an idle upstream connection taken from the pool. Bodies are streamed piece by piece as they
arrive (re-chunked when the sender chunked them, or when the upstream's response has no
length), never buffered whole; flow control pauses the side that sends faster than the
other reads; how an answer is framed for the client is :mod:`ostiary.gateway.exchange`'s.
When the upstream answers a protocol switch (``101``, WebSocket) the two connections become
a byte pipe (:mod:`ostiary.gateway.pipe`). A request the upstream cannot answer gets
``502``; a route refusal ``403``; an unparseable request or a refused target ``400``; each of
these closes the connection.

Pipelined requests are queued and answered in order; their bodies wait in memory (reading
pauses past :data:`_QUEUE_LIMIT` bytes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import httptools

from ostiary.core.errors import MalformedInput
from ostiary.gateway.config import Route
from ostiary.gateway.exchange import BODY_CHUNKED, Exchange, response_head
from ostiary.gateway.headers import DROP_REQUEST, connection_headers, host_headers
from ostiary.gateway.identity import ClientIdentity, route_for, route_refusal
from ostiary.gateway.pipe import End, link
from ostiary.gateway.target import canonical_target
from ostiary.gateway.upstream import HTTPUpstream, UpstreamPool

access_log = logging.getLogger("ostiary.gateway.access")

_QUEUE_LIMIT = 1 << 20
#: Seconds a client has to finish a request head it started (request line and headers).
HEAD_TIMEOUT = 10.0


OnRequest = Callable[[Exchange, ClientIdentity, float], None]


class HTTPDownstream(End):
    """The client's side of one TLS connection, after the connection-level checks."""

    def __init__(
        self,
        pool: UpstreamPool,
        routes: tuple[Route, ...],
        on_request: OnRequest,
        *,
        idle: float,
    ) -> None:
        super().__init__(idle)
        self.pool = pool
        self.routes = routes
        self.on_request = on_request
        self.identity: ClientIdentity | None = None
        self.upstream: HTTPUpstream | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Exchange] = deque()
        self._building: Exchange | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._url = b""
        self._added = b""
        self._forwarded = b""
        self._host_block: tuple[bytes | None, bytes] | None = None  # last Host, its headers
        self._held: list[bytes] | None = []  # bytes before begin(), or after an upgrade
        self._refusals: dict[int, str | None] = {}  # by id() of the route
        self._connecting: asyncio.Task[None] | None = None
        self._out: list[bytes] = []  # answer bytes, written by flush()
        self._in_head = False  # a request's head has begun and is not complete
        self._head_timer: asyncio.TimerHandle | None = None

    def begin(self, transport: asyncio.Transport, identity: ClientIdentity, peer: str) -> None:
        """Start serving: the handshake and the checks passed."""
        self.transport = transport
        self.identity = identity
        self._added, self._forwarded = connection_headers(identity, peer)
        held, self._held = self._held or [], None
        self.watch_idle()
        for data in held:
            self.data_received(data)

    # ------------------------------------------------------------------ transport events
    def data_received(self, data: bytes) -> None:
        if self.piping:
            super().data_received(data)
            return
        if self._held is not None:
            self._held.append(data)
            return
        loop = asyncio.get_running_loop()
        self.seen = loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._held = [data[upgrade.args[0] :]]  # for the upstream, after its 101
        except httptools.HttpParserError:
            self._answer(400, "bad request", None)
        if self._in_head and self._head_timer is None:
            # A head spread over reads (a whole one costs no timer): it has HEAD_TIMEOUT.
            self._head_timer = loop.call_later(HEAD_TIMEOUT, self._head_too_slow)

    def _head_too_slow(self) -> None:
        """Close a connection whose request head is still coming (slowloris: its bytes
        keep the idle timer from ever firing).
        """
        self._head_timer = None
        if self._in_head and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._connecting is not None:
            self._connecting.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None and not self.piping and upstream.transport is not None:
            upstream.owner = None
            upstream.transport.close()  # mid-exchange: not reusable

    # ------------------------------------------------------------------ request parsing
    def on_message_begin(self) -> None:
        self._in_head = True
        self._headers = []
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        parser = self._parser
        method = parser.get_method()
        target = self._url
        exchange = Exchange(
            method.decode("latin-1"), target.decode("latin-1"), started=time.monotonic()
        )
        exchange.upgrade = parser.should_upgrade()
        exchange.keep_alive = parser.should_keep_alive()
        exchange.http10 = parser.get_http_version() == "1.0"
        exchange.head_request = method == b"HEAD"
        try:
            path, target = canonical_target(target)
            route = route_for(path.decode("ascii"), self.routes)
            try:
                refusal = self._refusals[id(route)]
            except KeyError:
                refusal = self._refusals[id(route)] = self._refusal(route)
            if refusal is not None:
                exchange.refusal = refusal
            else:
                exchange.head = self._head(exchange, method, target)
        except MalformedInput as exc:
            exchange.refusal, exchange.refusal_status = "bad-request", 400
            exchange.refusal_detail = exc.detail
        self._building = exchange
        self._queue.append(exchange)
        if len(self._queue) == 1:
            self._start(exchange)

    def _head(self, exchange: Exchange, method: bytes, target: bytes) -> bytes:
        """The request head for the upstream: canonical target, the client's headers less the
        dropped ones (:mod:`ostiary.gateway.headers`), ours appended; raises
        :class:`MalformedInput` for a second ``Host`` (RFC 9112 section 3.2).
        """
        parts = [method, b" ", target, b" HTTP/1.1\r\n"]
        host: bytes | None = None
        for name, value in self._headers:
            low = name.lower()
            if low in DROP_REQUEST or b"_" in low:
                if exchange.upgrade and low == b"upgrade":
                    parts += (name, b": ", value, b"\r\n")
                continue
            if low == b"host":
                if host is not None:
                    raise MalformedInput("more than one Host header")
                host = value
            elif low == b"transfer-encoding":
                exchange.chunked = value.rstrip().lower().endswith(b"chunked")
            parts += (name, b": ", value, b"\r\n")
        if host is None:  # HTTP/1.0 without one: HTTP/1.1 upstream needs it
            parts.append(self.pool.host_header)
        if exchange.upgrade:
            parts.append(b"connection: upgrade\r\n")
            exchange.request_done = True
        block = self._host_block
        if block is None or block[0] != host:  # a connection mostly asks for one host
            block = self._host_block = (host, host_headers(host, self._forwarded))
        parts.append(block[1])
        parts.append(self._added)
        return b"".join(parts)

    def _refusal(self, route: Route | None) -> str | None:
        if route is None or self.identity is None:
            return "no-route"
        return route_refusal(self.identity, route)

    def on_body(self, body: bytes) -> None:
        exchange = self._building
        if exchange is None or exchange.refusal:
            return
        if exchange.chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        self._to_upstream(exchange, body)

    def on_message_complete(self) -> None:
        exchange = self._building
        if exchange is None:
            return
        self._building = None
        exchange.request_done = True
        if exchange.refusal:
            if self._queue and self._queue[0] is exchange:
                self._refuse(exchange)
            return
        if exchange.chunked:
            self._to_upstream(exchange, b"0\r\n\r\n")

    def _to_upstream(self, exchange: Exchange, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.exchange is exchange and upstream.transport:
            upstream.transport.write(data)
            return
        exchange.pending.append(data)
        exchange.pending_size += len(data)
        if exchange.pending_size > _QUEUE_LIMIT:
            self.pause_reading("queue")

    # ------------------------------------------------------------------ upstream side
    def _start(self, exchange: Exchange) -> None:
        if exchange.refusal:
            if exchange.request_done:
                self._refuse(exchange)
            return
        upstream = self.pool.take()
        if upstream is not None:
            upstream.reused = True
            self._attach(upstream, exchange)
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect(exchange))

    async def _connect(self, exchange: Exchange) -> None:
        try:
            upstream = await self.pool.connect()
        except (OSError, TimeoutError):
            self._connecting = None
            self._answer(502, "upstream unreachable", exchange)
            return
        self._connecting = None
        if self.transport is None or self.transport.is_closing():
            self.pool.give_back(upstream)
            return
        self._attach(upstream, exchange)

    def _attach(self, upstream: HTTPUpstream, exchange: Exchange) -> None:
        self.upstream = upstream
        upstream.owner = self
        upstream.partner = self
        upstream.exchange = exchange
        upstream.received = False
        self.partner = upstream
        if self.writing_paused:
            upstream.pause_reading("flow")
        if upstream.transport is not None:
            upstream.transport.write(exchange.head + b"".join(exchange.pending))
        exchange.pending.clear()
        exchange.pending_size = 0
        self.resume_reading("queue")

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        exchange = self._queue[0]
        if self.transport is None:
            return
        self._out.append(response_head(exchange, status, reason, headers))

    def response_body(self, data: bytes) -> None:
        exchange = self._queue[0]
        exchange.sent += len(data)
        if exchange.body_mode == BODY_CHUNKED:
            self._out.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._out.append(data)

    def flush(self) -> None:
        """Write what the upstream's last bytes produced in one go: for a small answer, head
        and body become one TLS record and one system call.
        """
        if self._out:
            if self.transport is not None:
                self.transport.write(b"".join(self._out))
            self._out.clear()

    def response_done(self, upstream: HTTPUpstream, *, reusable: bool) -> None:
        exchange = self._queue.popleft()
        if exchange.body_mode == BODY_CHUNKED:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self._log(exchange)
        self.upstream = None
        self.partner = None
        upstream.exchange = None
        upstream.resume_reading("flow")
        self.resume_reading("flow")
        if reusable and exchange.request_done and not exchange.upgrade:
            self.pool.give_back(upstream)
        else:
            upstream.owner = None
            if upstream.transport is not None:
                upstream.transport.close()
        if not exchange.request_done:  # answered before the whole request was read
            exchange.close_after = True
        if exchange.close_after:
            if self.transport is not None:
                self.transport.close()
            return
        if self._queue:
            self._start(self._queue[0])

    def switched(self, upstream: HTTPUpstream, early: bytes) -> None:
        """The upstream answered 101: from now on both connections are one byte pipe."""
        exchange = self._queue.popleft()
        self.flush()
        self._log(exchange)
        held, self._held = b"".join(self._held or []), None
        link(self, upstream, held_a=held, held_b=early)

    def upstream_lost(self, upstream: HTTPUpstream) -> None:
        """The upstream closed while serving this client."""
        self.flush()
        if self.upstream is not upstream or not self._queue:
            return
        exchange = self._queue[0]
        self.upstream = None
        self.partner = None
        if exchange.answered:
            if exchange.until_close:  # a body without length: the close is its end
                self.response_done(upstream, reusable=False)
                return
            if self.transport is not None:
                self.transport.close()
            return
        if upstream.reused and not upstream.received and not exchange.retried:
            # An idle connection the upstream had just closed: ask again on a new one, if
            # the request is still whole (no body already streamed away).
            if (
                not exchange.chunked
                and exchange.request_done
                and b"content-length" not in (exchange.head.lower())
            ):
                exchange.retried = True
                self._start(exchange)
                return
        self._answer(502, "bad answer from the upstream", exchange)

    # ------------------------------------------------------------------ simple answers
    def _refuse(self, exchange: Exchange) -> None:
        self._queue.popleft()
        if exchange.refusal_status == 400:
            self._answer(400, f"bad request: {exchange.refusal_detail}", exchange)
        else:
            self._answer(403, f"forbidden: {exchange.refusal}", exchange)

    def _answer(self, status: int, text: str, exchange: Exchange | None) -> None:
        """A short answer of our own (counted and logged first), then close."""
        if exchange is not None:
            exchange.status = status
            self._log(exchange)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if exchange is None or not exchange.answered:
            body = (text + "\n").encode("ascii")
            transport.write(
                b"HTTP/1.1 %d %b\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%b"
                % (status, _REASONS.get(status, b""), len(body), body)
            )
        transport.close()

    def _log(self, exchange: Exchange) -> None:
        if self.identity is not None:
            self.on_request(exchange, self.identity, time.monotonic() - exchange.started)


_REASONS = {400: b"Bad Request", 403: b"Forbidden", 502: b"Bad Gateway"}
