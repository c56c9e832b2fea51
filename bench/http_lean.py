"""The bench clients' HTTP/1.1: a keep-alive connection per worker, answers parsed by httptools.

Shared by bench/acme_lean.py and bench/scep_lean.py (asyncio, one process, one core's worth
of work): each of their workers keeps one ``Connection`` (plain, or TLS with the context it is
given when the origin is https), reopened if the server closes it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import httptools

T = TypeVar("T")


@dataclass
class Outcome:
    """What one level did: seconds per completed job (order, enrollment), failures, wall and
    CPU seconds.
    """

    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    server_core_wait: float = 0.0  # seconds the server's threads waited for its core
    requests: int = 0  # HTTP requests the timed orders or enrollments made (polls included)

    def figures(self) -> dict[str, Any]:
        """The figures every row gives: jobs done, their rate, p50/p99 (ms), server and client
        CPU per job (ms), the server's core busy and its threads' wait (seconds per second).
        """
        times = sorted(self.times)
        done = len(times)
        return {
            "done": done,
            "per_s": round(done / self.elapsed, 2),
            "p50_ms": round(statistics.median(times) * 1000, 1) if times else 0.0,
            "p99_ms": round(times[min(done - 1, int(done * 0.99))] * 1000, 1) if times else 0.0,
            "server_cpu_ms": round(self.server_cpu / done * 1000, 2) if done else 0.0,
            "client_cpu_ms": round(self.client_cpu / done * 1000, 2) if done else 0.0,
            "server_core_busy": round(self.server_cpu / self.elapsed, 2),
            "server_core_wait": round(self.server_core_wait / self.elapsed, 2),
        }


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


class _Wire(asyncio.Protocol):
    """One TCP (or TLS) connection: writes a request, parses the answer with httptools."""

    def __init__(self, origin: str) -> None:
        self._origin = origin
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.WriteTransport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response = Response()
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[Response] | None = None

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def exchange(self, request: bytes) -> Response:
        if self._transport is None:
            raise ConnectionError(f"{self._origin} closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"{self._origin}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"{self._origin} closed the connection"))
        if not self.lost.done():
            self.lost.set_result(None)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._response.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        response, self._response = self._response, Response()
        response.status = self._parser.get_status_code()
        response.body, self._chunks = b"".join(self._chunks), []
        if not self._parser.should_keep_alive():
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class Connection:
    """A keep-alive HTTP/1.1 connection to ``origin``, reopened when the server closed it;
    its POSTs carry ``post_type`` (``application/jose+json`` for ACME).

    Answers are parsed by httptools (llhttp, uvicorn's parser); a request is one formatted
    line and four headers. h11 did the same at ~90 µs of CPU per request and ~65 µs per
    http-01 answer (a third of this client's CPU per order against pebble); httptools ~4 µs.
    """

    def __init__(
        self, origin: str, context: ssl.SSLContext | None = None, *, post_type: str
    ) -> None:
        parts = urlsplit(origin)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        default_port = 443 if parts.scheme == "https" else 80
        self._host, self._port = parts.hostname or "", parts.port or default_port
        self._context = context if parts.scheme == "https" else None
        self._head = f"Host: {parts.netloc}\r\nUser-Agent: ostiary-bench\r\n".encode()
        self._post_type = post_type.encode("ascii")
        self._wire: _Wire | None = None
        self._wires: list[_Wire] = []  # every one opened, for aclose to wait on
        self.requests = 0

    async def request(self, method: str, url: str, body: bytes = b"") -> Response:
        if not url.startswith(self.origin + "/"):
            raise ValueError(f"{url} is not on {self.origin}")
        if self._wire is None or not self._wire.open:
            self.close()
            _, self._wire = await asyncio.get_running_loop().create_connection(
                lambda: _Wire(self.origin),
                self._host,
                self._port,
                ssl=self._context,
                server_hostname=self._host if self._context else None,
            )
            self._wires.append(self._wire)
        self.requests += 1
        line = f"{method} {url[len(self.origin) :]} HTTP/1.1\r\n".encode()
        framing = b""
        if method == "POST":
            framing = b"Content-Type: %s\r\nContent-Length: %d\r\n" % (self._post_type, len(body))
        return await self._wire.exchange(line + self._head + framing + b"\r\n" + body)

    def close(self) -> None:
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    async def aclose(self) -> None:
        """Close, and wait (at most 5 s) until every connection is down (TLS shut down):
        uvloop refuses to close a loop with handles still open.
        """
        self.close()
        if waiting := [wire.lost for wire in self._wires if not wire.lost.done()]:
            await asyncio.wait(waiting, timeout=5)


async def timed_workers(
    concurrency: int,
    count: int,
    one: Callable[[int, int], Awaitable[object]],
    reset: Callable[[int], None],
    connections: list[Connection],
    meter: Callable[[], tuple[float, float]],
) -> Outcome:
    """Jobs ``0..count-1`` by ``concurrency`` workers, job ``n`` as ``one(n % concurrency,
    n)``, timed. A failed job is counted, not raised: ``reset(worker)`` (e.g. close its
    connection: a half-read answer must not be read next) and the worker goes on. ``meter``
    (the server's CPU seconds, its threads' wait for a core) is read before and after;
    ``connections`` are the workers', for the requests made.
    """
    outcome = Outcome()

    async def work(worker: int) -> None:
        for number in range(worker, count, concurrency):
            began = time.perf_counter()
            try:
                await one(worker, number)
            except Exception as exc:  # counted and reported: a bench run goes on
                outcome.failures.append(f"{type(exc).__name__}: {exc}"[:300])
                reset(worker)
                continue
            outcome.times.append(time.perf_counter() - began)

    requests_before = sum(c.requests for c in connections)
    server_before, client_before = meter(), time.process_time()
    began = time.perf_counter()
    await asyncio.gather(*(work(i) for i in range(concurrency)))
    outcome.elapsed = time.perf_counter() - began
    outcome.client_cpu = time.process_time() - client_before
    server_after = meter()
    outcome.requests = sum(c.requests for c in connections) - requests_before
    outcome.server_cpu = server_after[0] - server_before[0]
    outcome.server_core_wait = server_after[1] - server_before[1]
    return outcome


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a fresh event loop, uvloop's when it is installed."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
