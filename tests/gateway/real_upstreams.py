"""Real application servers behind the gateway, as users run them: a Starlette app under
uvicorn (ASGI; uvicorn percent-decodes the path it hands the app) and a Flask app under
uvicorn's WSGI interface (which folds ``_`` into ``-`` and joins repeated headers, first
come first). Each runs in a thread on a socket the test bound to a free 127.0.0.1 port, and
records what reached it.
"""

from __future__ import annotations

import posixpath
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from flask import Flask, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ostiary.tls import client_context
from tests.gateway.conftest import CA, Issued


def exchange(ca: CA, issued: Issued, port: int, head: bytes) -> tuple[int, bytes]:
    """Send one raw request head over mTLS (the target exactly as given, as no HTTP client
    library would send it); the status and the body of the answer."""
    context = client_context([ca.authority.ca.root], identity=issued.identity)
    received = b""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head)
        while chunk := tls.recv(65536):
            received += chunk
            if received.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in received:
                break  # a switch: the upstream's end of the pipe stays open
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


class Reached:
    """What reached an application, in order: one record per request or WebSocket."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.port = 0

    def mark(self) -> int:
        return len(self.records)

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.records[mark:]


def _record(kind: str, scope: Any) -> dict[str, Any]:
    path = scope["path"]
    return {
        "kind": kind,
        "path": path,  # percent-decoded by uvicorn
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        # where an app that resolves dot segments and empty segments would route it
        "resolved": posixpath.normpath("/" + path.lstrip("/")),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }


def starlette_app(reached: Reached) -> Starlette:
    async def http(request: Request) -> JSONResponse:
        record = _record("http", request.scope)
        reached.records.append(record)
        return JSONResponse(record)

    async def websocket(socket: WebSocket) -> None:
        reached.records.append(_record("websocket", socket.scope))
        await socket.accept()
        async for message in socket.iter_text():  # ends when the client goes
            await socket.send_text(message)

    return Starlette(
        routes=[
            Route("/{rest:path}", http, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
            WebSocketRoute("/{rest:path}", websocket),
        ]
    )


def flask_app(reached: Reached) -> Flask:
    app = Flask("upstream")

    @app.route("/", defaults={"rest": ""})
    @app.route("/<path:rest>")
    def echo(rest: str) -> dict[str, Any]:
        record = {
            "kind": "wsgi",
            "path": request.path,
            "x-client-subject": request.headers.get("X-Client-Subject"),
            "x-client-san": request.headers.get("X-Client-SAN"),
            "environ": {k: v for k, v in request.environ.items() if k.startswith("HTTP_")},
        }
        reached.records.append(record)
        return record

    return app


@contextmanager
def serve(app: Any, reached: Reached, *, interface: str) -> Iterator[Reached]:
    """``app`` under uvicorn in a thread on a free loopback port; stopped on the way out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    reached.port = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        interface=interface,  # type: ignore[arg-type]
        log_level="warning",
        lifespan="off",
        ws="wsproto",
    )
    with warnings.catch_warnings():
        # uvicorn's own WSGI interface (what `uvicorn --interface wsgi` runs) says it is
        # deprecated in favour of a2wsgi, which builds the environ the same way.
        warnings.simplefilter("ignore", DeprecationWarning)
        config.load()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield reached
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


@contextmanager
def starlette_upstream() -> Iterator[Reached]:
    reached = Reached()
    with serve(starlette_app(reached), reached, interface="asgi3") as running:
        yield running


@contextmanager
def flask_upstream() -> Iterator[Reached]:
    reached = Reached()
    with serve(flask_app(reached), reached, interface="wsgi") as running:
        yield running
