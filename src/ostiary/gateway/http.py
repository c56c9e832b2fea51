"""The HTTP reverse proxy after the handshake: asyncio Protocols with httptools (llhttp) on
both sides, and a pool of keep-alive connections to the upstream.

Per request the work is small: the target is put in its canonical form
(:mod:`ostiary.gateway.target`; a plain one is checked by one match) and the route rules are
checked on it, the parsed header list is filtered (:mod:`ostiary.gateway.headers`: identity,
forwarding and hop-by-hop headers dropped, and any name with ``_``), the connection's
identity block (computed once per client connection) is appended, and the head is written to
an idle upstream connection taken from the pool. Bodies are streamed piece by piece as they
arrive (re-chunked when the sender chunked them, or when the upstream's response has no
length), never buffered whole; flow control pauses the side that sends faster than the
other reads. When the upstream answers a
protocol switch (``101``, WebSocket) the two connections become a byte pipe
(:mod:`ostiary.gateway.pipe`). A request the upstream cannot answer gets ``502``; a route
refusal ``403``; an unparseable request or a refused target ``400``; each of these closes
the connection.

Pipelined requests are queued and answered in order; their bodies wait in memory (reading
pauses past :data:`_QUEUE_LIMIT` bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

from ostiary.core.errors import MalformedInput
from ostiary.gateway.config import Route
from ostiary.gateway.headers import DROP_REQUEST, connection_headers, host_headers
from ostiary.gateway.identity import ClientIdentity, route_for, route_refusal
from ostiary.gateway.pipe import End, link
from ostiary.gateway.target import canonical_target

access_log = logging.getLogger("ostiary.gateway.access")

_DROP_RESPONSE = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding"}
)
_QUEUE_LIMIT = 1 << 20
#: Seconds a client has to finish a request head it started (request line and headers).
HEAD_TIMEOUT = 10.0
_POOL_SIZE = 256

# How a response body is written to the client.
_NONE, _RAW, _CHUNKED = 0, 1, 2


@dataclass(eq=False, slots=True)
class Exchange:
    """One request and its answer; the access log reports the first five fields."""

    method: str
    target: str
    status: int = 0
    sent: int = 0
    refusal: str = ""  # why the request is refused: a route (403) or its target (400)
    refusal_status: int = 403
    refusal_detail: str = ""
    started: float = 0.0
    head: bytes = b""
    chunked: bool = False  # the request body is chunked (and re-chunked upstream)
    pending: list[bytes] = field(default_factory=list)
    pending_size: int = 0
    request_done: bool = False
    upgrade: bool = False
    head_request: bool = False
    http10: bool = False
    keep_alive: bool = True
    body_mode: int = _NONE
    answered: bool = False  # a final response head went to the client
    close_after: bool = False
    until_close: bool = False  # the response body ends when the upstream closes
    retried: bool = False


OnRequest = Callable[[Exchange, ClientIdentity, float], None]


class UpstreamPool:
    """Idle keep-alive connections to the upstream, most recently used first."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        context: ssl.SSLContext | None,
        timeout: float,
        idle: float,
    ) -> None:
        self.address = address
        self.context = context
        self.timeout = timeout
        self.idle = idle
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        self.host_header = b"host: %b:%d\r\n" % (host.encode("idna"), address[1])
        self._idle: list[HTTPUpstream] = []

    def take(self) -> HTTPUpstream | None:
        while self._idle:
            upstream = self._idle.pop()
            if upstream.transport is not None and not upstream.transport.is_closing():
                return upstream
        return None

    def give_back(self, upstream: HTTPUpstream) -> None:
        upstream.owner = None
        upstream.partner = None
        if len(self._idle) >= _POOL_SIZE or upstream.transport is None:
            if upstream.transport is not None:
                upstream.transport.close()
            return
        self._idle.append(upstream)

    def forget(self, upstream: HTTPUpstream) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(upstream)

    async def connect(self) -> HTTPUpstream:
        loop = asyncio.get_running_loop()
        host, port = self.address
        _, upstream = await asyncio.wait_for(
            loop.create_connection(
                lambda: HTTPUpstream(self),
                host,
                port,
                ssl=self.context,
                server_hostname=host if self.context is not None else None,
            ),
            self.timeout,
        )
        return upstream

    def close(self) -> None:
        """Drop the idle connections (the gateway is stopping).

        Aborted, not closed: closing a TLS connection waits for the upstream's close_notify,
        which may come after the event loop has ended, leaving the socket to the garbage
        collector. An idle connection has nothing in flight to lose.
        """
        while self._idle:
            upstream = self._idle.pop()
            if upstream.transport is not None:
                upstream.transport.abort()


class HTTPUpstream(End):
    """One connection to the upstream; serves one exchange at a time for its owner."""

    def __init__(self, pool: UpstreamPool) -> None:
        super().__init__(pool.idle)
        self.pool = pool
        self.owner: HTTPDownstream | None = None
        self.exchange: Exchange | None = None
        self.reused = False
        self.received = False
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._skip_body = False

    def data_received(self, data: bytes) -> None:
        if self.piping:
            super().data_received(data)
            return
        self.received = True
        self.seen = asyncio.get_running_loop().time()  # the client's idle timer looks here
        owner = self.owner
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.owner is not None:
                self.owner.switched(self, data[upgrade.args[0] :])
            return
        except httptools.HttpParserError:
            self._broken()
            return
        finally:
            if owner is not None:
                owner.flush()
        if self._skip_body:  # a response to HEAD: no body, whatever its headers say
            self._skip_body = False
            self._parser = httptools.HttpResponseParser(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.pool.forget(self)
        if not self.piping and self.owner is not None:
            self.owner.upstream_lost(self)

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.owner is not None:
            status = self._parser.get_status_code()
            self.owner.response_head(status, self._reason, self._headers)
            exchange = self.exchange
            if exchange is not None and exchange.head_request and status >= 200:
                self._skip_body = True
                self.owner.response_done(self, reusable=self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.owner is not None:
            self.owner.response_body(body)

    def on_message_complete(self) -> None:
        if self.owner is not None and not self._skip_body:
            status = self._parser.get_status_code()
            if status >= 200:
                self.owner.response_done(self, reusable=self._parser.should_keep_alive())

    def _broken(self) -> None:
        if self.transport is not None:
            self.transport.close()


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
        transport = self.transport
        if transport is None:
            return
        if status < 200 and status != 101:  # 100 Continue, 103 Early Hints: passed on
            interim = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
            interim += [name + b": " + value + b"\r\n" for name, value in headers]
            self._out.append(b"".join(interim) + b"\r\n")
            return
        exchange.status = status
        exchange.answered = True
        parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        if status == 101:
            parts += [name + b": " + value + b"\r\n" for name, value in headers]
            self._out.append(b"".join(parts) + b"\r\n")
            return
        has_length = chunked = False
        for name, value in headers:
            low = name.lower()
            if low in _DROP_RESPONSE:
                chunked = chunked or low == b"transfer-encoding"
                continue
            has_length = has_length or low == b"content-length"
            parts += (name, b": ", value, b"\r\n")
        if exchange.head_request or status in (204, 304):
            exchange.body_mode = _NONE
        elif has_length and not chunked:
            exchange.body_mode = _RAW
        elif exchange.http10:  # no chunked encoding in HTTP/1.0: the end is the close
            exchange.body_mode = _RAW
            exchange.until_close = not chunked
            exchange.close_after = True
        else:
            exchange.body_mode = _CHUNKED
            exchange.until_close = not chunked
            parts.append(b"transfer-encoding: chunked\r\n")
        if exchange.upgrade:  # asked to switch, but the upstream did not
            exchange.close_after = True
        if not exchange.keep_alive or exchange.close_after:
            exchange.close_after = True
            parts.append(b"connection: close\r\n")
        elif exchange.http10:
            parts.append(b"connection: keep-alive\r\n")
        self._out.append(b"".join(parts) + b"\r\n")

    def response_body(self, data: bytes) -> None:
        exchange = self._queue[0]
        exchange.sent += len(data)
        if exchange.body_mode == _CHUNKED:
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
        if exchange.body_mode == _CHUNKED:
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
