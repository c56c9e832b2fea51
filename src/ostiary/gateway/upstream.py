"""The gateway's side toward the upstream: a pool of keep-alive connections, plain or TLS.

:class:`UpstreamPool` keeps idle connections, most recently used first (at most
:data:`_POOL_SIZE`), and opens new ones within the configured timeout. Each
:class:`HTTPUpstream` parses responses with httptools (llhttp) and hands the pieces to the
client connection that owns it for the exchange (:class:`UpstreamOwner`, the client side in
:mod:`ostiary.gateway.http`); after a ``101`` it becomes one end of a byte pipe
(:mod:`ostiary.gateway.pipe`). A response to ``HEAD`` has no body, whatever its headers say.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol

import httptools

from ostiary.gateway.exchange import Exchange
from ostiary.gateway.pipe import End

_POOL_SIZE = 256


class UpstreamOwner(Protocol):
    """The client connection an upstream connection serves for the current exchange."""

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_done(self, upstream: HTTPUpstream, *, reusable: bool) -> None: ...

    def switched(self, upstream: HTTPUpstream, early: bytes) -> None: ...

    def upstream_lost(self, upstream: HTTPUpstream) -> None: ...

    def flush(self) -> None: ...


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
        self.owner: UpstreamOwner | None = None
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


__all__ = ["HTTPUpstream", "UpstreamOwner", "UpstreamPool"]
