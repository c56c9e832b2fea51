"""The HTTPS listener's protocol: uvicorn's, with the hot path answered in the protocol itself.

Every request on the HTTPS listener goes to the FastAPI app through uvicorn (ASGI), except
the few registered as :class:`DirectEndpoint` (``POST /sign``, see
:func:`ostiary.server.app.direct_endpoints`): for those, uvicorn's httptools protocol
(:class:`~ostiary.server.tls_scope.TLSScopeHttpToolsProtocol`, the same parser, the same
connection and the same keep-alive handling) collects the body and calls the endpoint's
coroutine with it, and writes the answer as prepared bytes (:mod:`ostiary.server.http1`).
That skips what an ASGI request costs around the work: the scope, the middleware stack,
FastAPI's routing and request objects, the ASGI messages and uvicorn's header checks, which
took more CPU than the token check and the record together (docs/BENCHMARKS.md).

The answers are those of the app, byte for byte in status, problem document and the headers
that carry meaning (tests/server/test_api_http.py sends every refusal both ways):

- a ``Content-Type`` that is none of the endpoint's media types is 415, a body past
  :data:`~ostiary.server.body.MAX_BODY_SIZE` is 413; both are answered as soon as they are
  known (the head; the body's ``Content-Length``, or its size while it streams), as the
  app answers them before it reads on, and the rest of the body is read and dropped, never
  held; the connection stays open as the client asked;
- an :class:`~ostiary.core.errors.OstiaryError` from the endpoint is its problem document, an
  unreachable database 503, anything else 500 (logged), as
  :func:`~ostiary.server.http1.reply_for_error` maps them;
- ``Expect: 100-continue`` is answered before the body is read; the access log line is
  uvicorn's own (same logger, same format, the client from ``X-Forwarded-For`` when the
  peer is one of uvicorn's ``forwarded_allow_ips``).

The protocol takes a request only when nothing else is in progress on the connection: a
request pipelined behind an unfinished one, a ``root_path``, a concurrency limit or an
upgrade leave it to uvicorn, whose ``DirectRoute`` middleware (:mod:`ostiary.server.app`)
serves the same endpoint. While the protocol answers, it stands in uvicorn's place for the
request in progress (:class:`_DirectCycle`), so that a request pipelined behind it waits,
graceful shutdown waits for it, and a closed connection is noticed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ostiary.core.errors import OstiaryError
from ostiary.server.body import JSON, MAX_BODY_SIZE, check_media_type
from ostiary.server.http1 import Reply, encode, reply_for_error
from ostiary.server.problems import BodyTooLarge, error_response
from ostiary.server.tls_scope import TLSScopeHttpToolsProtocol


@dataclass(frozen=True, slots=True)
class DirectEndpoint:
    """A route the protocol answers itself: ``answer(body, peer)`` gives the body of a
    success (``peer``: the TCP peer's address, for per-address limits).
    """

    answer: Callable[[bytes, str | None], Awaitable[bytes]]
    media_types: tuple[str, ...] = (JSON,)
    status: int = 200
    content_type: str = JSON
    #: Told ``(status, seconds)`` of each answer, when the server keeps metrics.
    observe: Callable[[int, float], None] | None = None


#: Direct endpoints by (method, path).
DirectEndpoints = Mapping[tuple[str, str], DirectEndpoint]


class _NoEvent:
    """What uvicorn sets when the connection is lost (the protocol has nothing waiting)."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


@dataclass(slots=True, eq=False)
class _DirectCycle:
    """One request the protocol answers itself, standing in for uvicorn's request cycle.

    uvicorn's protocol reads ``response_complete`` (to queue a pipelined request behind
    this one, and in shutdown), sets ``keep_alive`` to False in a graceful shutdown and
    ``disconnected`` when the connection is lost.
    """

    endpoint: DirectEndpoint
    method: str
    target: str
    http_version: str
    keep_alive: bool
    client: str
    peer: str | None
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    response_complete: bool = False
    disconnected: bool = False
    message_event: _NoEvent = _NO_EVENT


class ApiHttpProtocol(TLSScopeHttpToolsProtocol):
    """uvicorn's httptools protocol, answering :attr:`direct` routes without ASGI.

    Give it its routes with :meth:`serving` (uvicorn makes the protocol objects itself,
    from the class it is configured with).
    """

    direct: ClassVar[DirectEndpoints] = {}

    @classmethod
    def serving(
        cls, endpoints: DirectEndpoints, *, max_connections: int | None = None
    ) -> type[ApiHttpProtocol]:
        """A protocol class answering ``endpoints`` directly, keeping at most
        ``max_connections`` connections open (None: no limit).
        """
        attributes = {"direct": dict(endpoints), "max_connections": max_connections}
        return type(cls.__name__, (cls,), attributes)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        loaded = self.config.loaded_app
        self._proxies = loaded.trusted_hosts if isinstance(loaded, ProxyHeadersMiddleware) else None

    # -- httptools callbacks

    def on_headers_complete(self) -> None:
        endpoint = self._direct_endpoint()
        if endpoint is None:
            super().on_headers_complete()
            return
        method = self.parser.get_method().decode("ascii")
        version = self.parser.get_http_version()
        cycle = _DirectCycle(
            endpoint=endpoint,
            method=method,
            target=self.url.decode("latin-1"),
            http_version=version,
            keep_alive=version != "1.0" and self.parser.should_keep_alive(),
            # Read now: the headers are the next request's once this one waits.
            client=self._client_address() if self.access_log else "",
            peer=self.client[0] if self.client else None,
        )
        # uvicorn's own handlers see this request as in progress from here on.
        self.cycle = cycle  # type: ignore[assignment]
        content_type = declared = None
        for name, value in self.headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                declared = value
        try:
            check_media_type(content_type, endpoint.media_types)
        except OstiaryError as exc:
            self._respond(cycle, reply_for_error(exc, method, cycle.target))
            return
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_SIZE:
            self._too_large(cycle)
            return
        if self.expect_100_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _DirectCycle):
            super().on_body(body)
            return
        if cycle.response_complete:
            return  # refused before the body was complete: the rest is dropped
        cycle.size += len(body)
        if cycle.size > MAX_BODY_SIZE:
            self._too_large(cycle)
            return
        cycle.body.append(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _DirectCycle):
            super().on_message_complete()
            return
        if cycle.response_complete:
            return
        task = self.loop.create_task(self._answer(cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    # -- answering

    def _direct_endpoint(self) -> DirectEndpoint | None:
        """The direct endpoint of the request whose headers were just parsed, if the
        protocol may answer it here (else uvicorn does).
        """
        if not self.direct or self.root_path or self.limit_concurrency is not None:
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind an unfinished request: uvicorn queues it
        if self.parser.should_upgrade():
            return None
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        return self.direct.get((self.parser.get_method().decode("ascii"), path))

    def _client_address(self) -> str:
        """The client as uvicorn's access log shows it (``X-Forwarded-For`` from a trusted
        proxy, else the peer).
        """
        client = self.client
        if self._proxies is not None and client is not None and client[0] in self._proxies:
            forwarded = [value for name, value in self.headers if name == b"x-forwarded-for"]
            if forwarded:
                host, port = self._proxies.get_trusted_client_address(
                    b", ".join(forwarded).decode("latin-1")
                )
                if host:
                    client = (host, port)
        return f"{client[0]}:{client[1]}" if client else ""

    async def _answer(self, cycle: _DirectCycle) -> None:
        started = time.perf_counter()
        endpoint = cycle.endpoint
        try:
            body = await endpoint.answer(b"".join(cycle.body), cycle.peer)
        except Exception as exc:
            reply = reply_for_error(exc, cycle.method, cycle.target)
        else:
            reply = Reply(endpoint.status, body, endpoint.content_type)
        if endpoint.observe is not None:
            endpoint.observe(reply.status, time.perf_counter() - started)
        self._respond(cycle, reply)

    def _too_large(self, cycle: _DirectCycle) -> None:
        """Refuse a body over the cap now; the rest of it is read and dropped, as uvicorn
        does after an app answers early (closing instead would reset a client still
        sending, before it reads the answer).
        """
        self._respond(cycle, Reply.of(error_response(BodyTooLarge.over(MAX_BODY_SIZE))))

    def _respond(self, cycle: _DirectCycle, reply: Reply) -> None:
        cycle.response_complete = True
        transport = self.transport
        if cycle.disconnected or transport.is_closing():
            return
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                cycle.client,
                cycle.method,
                cycle.target,
                cycle.http_version,
                reply.status,
            )
        transport.write(encode(reply, head_only=False, close=not cycle.keep_alive))
        if not cycle.keep_alive:
            transport.close()
        self.on_response_complete()


__all__ = ["ApiHttpProtocol", "DirectEndpoint", "DirectEndpoints"]
