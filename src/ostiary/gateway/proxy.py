"""What happens after the handshake: the HTTP reverse proxy (h11 on both sides, one upstream
connection per client connection, so keep-alive maps one to one) and the TCP tunnel.

Request and response bodies are streamed event by event, never buffered whole. A request
that asks for a protocol switch (WebSocket) goes through unchanged apart from the identity
headers; once the upstream answers 101, the two sockets are spliced byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import h11

from ostiary.gateway.config import Route
from ostiary.gateway.identity import IDENTITY_HEADERS, ClientIdentity, route_for, route_refusal

_CHUNK = 65536
access_log = logging.getLogger("ostiary.gateway.access")

#: Headers about the connection itself that the gateway sets, never passed from the client.
_FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})


@dataclass
class Exchange:
    """What the access log says about one request."""

    method: str
    target: str
    status: int = 0
    sent: int = 0
    refusal: str = ""  # why a route refused the request (403)


class _Outbox:
    """Bytes for one peer, written together: one write (one TLS record, one system call) per
    message instead of one per h11 event. Flushed when large, at the end of a message, and
    before waiting for input, so streamed bodies still flow as they arrive.
    """

    def __init__(self, connection: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self.connection = connection
        self.writer = writer
        self.pending = bytearray()

    async def add(self, event: h11.Event, *, flush: bool = False) -> None:
        data = self.connection.send(event)
        if data:
            self.pending += data
        if flush or len(self.pending) >= _CHUNK:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            self.writer.write(bytes(self.pending))
            self.pending.clear()
            await self.writer.drain()


async def _next_event(
    connection: h11.Connection,
    reader: asyncio.StreamReader,
    timeout: float,
    outbox: _Outbox | None = None,
) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        if outbox is not None:
            await outbox.flush()
        data = await asyncio.wait_for(reader.read(_CHUNK), timeout)
        connection.receive_data(data)  # b"" means EOF


async def _send(connection: h11.Connection, writer: asyncio.StreamWriter, event: h11.Event) -> None:
    data = connection.send(event)
    if data:
        writer.write(data)
        await writer.drain()


async def splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
    *,
    idle: float,
) -> None:
    """Copy bytes both ways until either side closes or is idle for ``idle`` seconds."""

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await asyncio.wait_for(source.read(_CHUNK), idle):
                sink.write(data)
                await sink.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if sink.can_write_eof():
                    sink.write_eof()

    tasks = [
        asyncio.create_task(pump(a_reader, b_writer)),
        asyncio.create_task(pump(b_reader, a_writer)),
    ]
    _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    # Let the other direction finish what is in flight, briefly, then stop.
    if pending:
        _, still = await asyncio.wait(pending, timeout=idle)
        for task in still:
            task.cancel()


class HTTPProxy:
    """Serves one client connection: route check, identity headers, streaming both ways."""

    def __init__(
        self,
        upstream: tuple[str, int],
        routes: tuple[Route, ...],
        *,
        idle: float,
        on_request: Callable[[Exchange, ClientIdentity, float], None],
    ) -> None:
        self.upstream = upstream
        self.routes = routes
        self.idle = idle
        self.on_request = on_request

    async def serve(
        self,
        identity: ClientIdentity,
        peer: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        down = h11.Connection(h11.SERVER)
        up: h11.Connection | None = None
        up_streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    event = await _next_event(down, reader, self.idle)
                except h11.RemoteProtocolError:
                    await self._simple(down, writer, 400, "bad request")
                    return
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed, or EOF between requests
                started = time.monotonic()
                exchange = Exchange(event.method.decode("latin-1"), event.target.decode("latin-1"))
                path = exchange.target.split("?", 1)[0]
                route = route_for(path, self.routes)
                refusal = "no-route" if route is None else route_refusal(identity, route)
                if refusal is not None:
                    await self._drain_body(down, reader)
                    exchange.status = 403
                    exchange.refusal = refusal
                    self.on_request(exchange, identity, time.monotonic() - started)
                    await self._simple(down, writer, 403, f"forbidden: {refusal}")
                    return
                if up_streams is None:
                    try:
                        up_streams = await asyncio.wait_for(
                            asyncio.open_connection(*self.upstream), self.idle
                        )
                    except (OSError, TimeoutError):
                        await self._drain_body(down, reader)
                        exchange.status = 502
                        await self._simple(down, writer, 502, "upstream unreachable")
                        self.on_request(exchange, identity, time.monotonic() - started)
                        return
                    up = h11.Connection(h11.CLIENT)
                if up is None:  # for the type checker: set together with up_streams
                    return
                try:
                    switched = await self._exchange(
                        event, identity, peer, down, reader, writer, up, *up_streams, exchange
                    )
                except (ConnectionError, TimeoutError, h11.ProtocolError):
                    if down.our_state is h11.SEND_RESPONSE:  # nothing sent yet: say so
                        exchange.status = 502
                        await self._simple(down, writer, 502, "bad answer from the upstream")
                    self.on_request(exchange, identity, time.monotonic() - started)
                    return
                self.on_request(exchange, identity, time.monotonic() - started)
                if switched:
                    await splice(reader, writer, *up_streams, idle=self.idle)
                    return
                if down.states != {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
                    return  # the client asked to close, or HTTP/1.0
                down.start_next_cycle()
                if up.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
                    up.start_next_cycle()
                else:  # the upstream closes (HTTP/1.0, Connection: close): a new one next time
                    up_streams[1].close()
                    up_streams, up = None, None
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            return
        finally:
            if up_streams is not None:
                up_streams[1].close()

    async def _exchange(
        self,
        request: h11.Request,
        identity: ClientIdentity,
        peer: str,
        down: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up: h11.Connection,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        exchange: Exchange,
    ) -> bool:
        """Forward one request and its response; True if the protocol was switched."""
        headers = [
            (name, value)
            for name, value in request.headers
            if name not in IDENTITY_HEADERS and name not in _FORWARDING
        ]
        headers += identity.headers()
        headers += [(b"x-forwarded-for", peer.encode("ascii")), (b"x-forwarded-proto", b"https")]
        to_up, to_down = _Outbox(up, up_writer), _Outbox(down, writer)
        await to_up.add(h11.Request(method=request.method, target=request.target, headers=headers))
        while True:  # the request body, streamed
            event = await _next_event(down, reader, self.idle, to_up)
            if isinstance(event, h11.Data):
                await to_up.add(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await to_up.add(h11.EndOfMessage(headers=event.headers), flush=True)
                break
            else:
                raise ConnectionError("the client went away mid-request")
        while True:  # the response, streamed
            event = await _next_event(up, up_reader, self.idle, to_down)
            if isinstance(event, h11.InformationalResponse):
                interim = h11.InformationalResponse(
                    status_code=event.status_code, headers=event.headers, reason=event.reason
                )
                if event.status_code == 101:
                    await to_down.add(interim, flush=True)
                    exchange.status = 101
                    writer.write(up.trailing_data[0])  # bytes the upstream sent after 101
                    up_writer.write(down.trailing_data[0])  # and the client after its request
                    return True
                await to_down.add(interim)
            elif isinstance(event, h11.Response):  # rebuilt: h11 answers in HTTP/1.1 only
                exchange.status = event.status_code
                headers = [(n, v) for n, v in event.headers if n != b"connection"]
                await to_down.add(
                    h11.Response(
                        status_code=event.status_code, headers=headers, reason=event.reason
                    )
                )
            elif isinstance(event, h11.Data):
                exchange.sent += len(event.data)
                await to_down.add(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await to_down.add(h11.EndOfMessage(headers=event.headers), flush=True)
                return False
            else:
                raise ConnectionError("the upstream went away mid-response")

    async def _drain_body(self, down: h11.Connection, reader: asyncio.StreamReader) -> None:
        while True:
            event = await _next_event(down, reader, self.idle)
            if not isinstance(event, h11.Data):
                return

    async def _simple(
        self, down: h11.Connection, writer: asyncio.StreamWriter, status: int, text: str
    ) -> None:
        body = (text + "\n").encode("ascii")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
            await _send(down, writer, h11.Response(status_code=status, headers=headers))
            await _send(down, writer, h11.Data(data=body))
            await _send(down, writer, h11.EndOfMessage())
