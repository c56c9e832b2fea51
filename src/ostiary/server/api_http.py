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

The ACME resources (a :class:`DirectFamily`, :func:`ostiary.server.app.direct_family`) are
answered here too, through their own endpoints, which take a Starlette request and give a
response: the protocol makes the scope as uvicorn does, passes it through uvicorn's
proxy-headers middleware and the connection's TLS extension, calls the endpoint with the
collected body, and writes its answer as uvicorn would (same status line and headers, the
server's ``date``, the same header checks). What it skips is uvicorn's request cycle and the
app's middleware stack (about a sixth of the server's CPU per ACME order).

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

import copy
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast
from urllib.parse import quote, unquote

import httptools
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ostiary.core.errors import OstiaryError
from ostiary.server.body import JSON, MAX_BODY_SIZE, check_media_type
from ostiary.server.direct_routes import DirectMatch, DirectTemplates
from ostiary.server.http1 import Reply, encode, encode_asgi, reply_for_error
from ostiary.server.problems import BodyTooLarge, error_response
from ostiary.server.tls_scope import TLSScopeHttpToolsProtocol, around


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


@dataclass(frozen=True, slots=True)
class DirectFamily:
    """Templated routes the protocol answers through their own endpoints (the ACME
    resources, :func:`ostiary.server.app.direct_family`): the endpoint gets the
    :class:`~fastapi.Request` uvicorn would have made (the same scope, after the
    proxy-headers middleware and with the connection's TLS extension and peer) and its
    :class:`~fastapi.Response` is written as uvicorn writes it, without uvicorn's ASGI cycle
    and the app's middleware. ``app`` is the app whose state and exception handlers the
    endpoints use; ``observe`` is told ``(method, template, status, seconds)`` of each answer
    when the server keeps metrics.
    """

    app: ASGIApp
    templates: DirectTemplates
    observe: Callable[[str, str, int, float], None] | None = None


#: The scope key that carries a family request's match to :func:`_call_match`.
_MATCH = "ostiary.direct_match"


async def _call_match(scope: Scope, receive: Receive, send: Send) -> None:
    match: DirectMatch = scope.pop(_MATCH)
    await match(scope, receive, send)


class _Collected:
    """The ASGI messages of one answer, kept until it is complete."""

    __slots__ = ("body", "headers", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.body.append(message.get("body", b""))


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

    endpoint: DirectEndpoint | None  # None for a family's request (``match``)
    method: str
    target: str
    http_version: str
    keep_alive: bool
    client: str
    peer: str | None
    match: DirectMatch | None = None
    scope: Scope | None = None
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
    family: ClassVar[DirectFamily | None] = None

    @classmethod
    def serving(
        cls,
        endpoints: DirectEndpoints,
        *,
        family: DirectFamily | None = None,
        max_connections: int | None = None,
    ) -> type[ApiHttpProtocol]:
        """A protocol class answering ``endpoints`` and ``family`` directly, keeping at most
        ``max_connections`` connections open (None: no limit).
        """
        attributes = {
            "direct": dict(endpoints),
            "family": family,
            "max_connections": max_connections,
        }
        return type(cls.__name__, (cls,), attributes)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        loaded = self.config.loaded_app
        self._proxies = loaded.trusted_hosts if isinstance(loaded, ProxyHeadersMiddleware) else None
        self._family_app: ASGIApp | None = None

    # -- httptools callbacks

    def on_headers_complete(self) -> None:
        if not self._may_answer():
            super().on_headers_complete()
            return
        method = self.parser.get_method().decode("ascii")
        endpoint = self.direct.get((method, self.url.split(b"?", 1)[0].decode("latin-1")))
        if endpoint is not None:
            self._start(endpoint, method)
        elif not self._start_family(method):
            super().on_headers_complete()

    def _start(self, endpoint: DirectEndpoint, method: str) -> None:
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

    def _start_family(self, method: str) -> bool:
        """Take the request if it is one of :attr:`family`'s, its scope made as uvicorn
        makes it; False to leave it to uvicorn.
        """
        if self.family is None:
            return False
        try:
            parsed = httptools.parse_url(self.url)
            raw_path: bytes = parsed.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return False  # uvicorn gives its own answer
        if "%" in path:
            path = unquote(path)
        match = self.family.templates.find(method, path)
        if match is None:
            return False
        version = self.parser.get_http_version()
        query: bytes = parsed.query or b""
        scope = self.scope
        scope["method"] = method
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        # The request line as uvicorn's access log shows it.
        target = quote(path) + ("?" + query.decode("ascii") if query else "")
        cycle = _DirectCycle(
            endpoint=None,
            method=method,
            target=target,
            http_version=version,
            keep_alive=version != "1.0" and self.parser.should_keep_alive(),
            client=self._client_address() if self.access_log else "",
            peer=self.client[0] if self.client else None,
            match=match,
            scope=cast(Scope, scope),
        )
        self.cycle = cycle  # type: ignore[assignment]
        declared = next((v for k, v in self.headers if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_SIZE:
            self._too_large(cycle)
        elif self.expect_100_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

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

    def _may_answer(self) -> bool:
        """Whether the protocol may answer the request whose headers were just parsed
        (else uvicorn does).
        """
        if not (self.direct or self.family) or self.root_path:
            return False
        if self.limit_concurrency is not None:
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind an unfinished request: uvicorn queues it
        return not self.parser.should_upgrade()

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
        if endpoint is None:
            await self._answer_family(cycle, started)
            return
        try:
            body = await endpoint.answer(b"".join(cycle.body), cycle.peer)
        except Exception as exc:
            reply = reply_for_error(exc, cycle.method, cycle.target)
        else:
            reply = Reply(endpoint.status, body, endpoint.content_type)
        if endpoint.observe is not None:
            endpoint.observe(reply.status, time.perf_counter() - started)
        self._respond(cycle, reply)

    async def _answer_family(self, cycle: _DirectCycle, started: float) -> None:
        family, match, scope = self.family, cycle.match, cycle.scope
        if family is None or match is None or scope is None:  # pragma: no cover - by _start_family
            raise RuntimeError("not a family request")
        body = b"".join(cycle.body)
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope["app"] = family.app
        scope[_MATCH] = match
        answer = _Collected()
        try:
            await self._family_front()(scope, receive, answer.send)
            data = encode_asgi(
                answer.status,
                [*self.server_state.default_headers, *answer.headers],
                b"".join(answer.body),
                head_only=cycle.method == "HEAD",
                close=not cycle.keep_alive,
            )
            status = answer.status
        except Exception as exc:
            reply = reply_for_error(exc, cycle.method, cycle.target)
            headers = [(b"content-type", (reply.content_type or "").encode("latin-1"))]
            headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
            status = reply.status
            data = encode_asgi(
                status,
                [*self.server_state.default_headers, *headers],
                reply.body,
                head_only=cycle.method == "HEAD",
                close=not cycle.keep_alive,
            )
        if family.observe is not None:
            family.observe(
                cycle.method, match.route.path_format, status, time.perf_counter() - started
            )
        self._send(cycle, status, data)

    def _family_front(self) -> ASGIApp:
        """What stands before a family's endpoint on this connection: uvicorn's
        proxy-headers middleware (as configured) and the TLS extension and peer.
        """
        if self._family_app is None:
            front: Any = _call_match
            loaded = self.config.loaded_app
            if isinstance(loaded, ProxyHeadersMiddleware):
                proxy = copy.copy(loaded)
                proxy.app = front
                front = proxy
            self._family_app = around(self.app, front)
        return self._family_app

    def _too_large(self, cycle: _DirectCycle) -> None:
        """Refuse a body over the cap now; the rest of it is read and dropped, as uvicorn
        does after an app answers early (closing instead would reset a client still
        sending, before it reads the answer).
        """
        self._respond(cycle, Reply.of(error_response(BodyTooLarge.over(MAX_BODY_SIZE))))

    def _respond(self, cycle: _DirectCycle, reply: Reply) -> None:
        self._send(cycle, reply.status, encode(reply, head_only=False, close=not cycle.keep_alive))

    def _send(self, cycle: _DirectCycle, status: int, data: bytes) -> None:
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
                status,
            )
        transport.write(data)
        if not cycle.keep_alive:
            transport.close()
        self.on_response_complete()


__all__ = ["ApiHttpProtocol", "DirectEndpoint", "DirectEndpoints", "DirectFamily"]
