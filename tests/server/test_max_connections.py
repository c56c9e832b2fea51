"""``ca serve --max-connections``: past the limit a listener closes a new connection at once.

Both listeners keep at most N connections open (per process); one more is closed without an
answer (no 503: that would first read a request a slow client may never finish), and once
one of the N closes, a new connection is served again.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from ostiary.authority.authority import Authority
from ostiary.tls import client_context
from tests.server.conftest import Provisioners, Running, run_server

LIMIT = 3
HEALTH = b"GET /health HTTP/1.1\r\nHost: ca\r\n\r\n"


@pytest.fixture
def running(authority: Authority, provisioners: Provisioners) -> Iterator[Running]:
    with run_server(authority, provisioners, max_connections=LIMIT) as running:
        yield running


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _health(connection: socket.socket) -> bytes:
    """Ask for /health on a kept-alive connection: its answer, or b"" once it is closed."""
    try:
        connection.sendall(HEALTH)
        return connection.recv(4096)
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return b""


def _health_on_new(connect: Callable[[], socket.socket]) -> bytes:
    """/health on a new connection, or b"" if it is closed (on HTTPS: before any TLS)."""
    try:
        with connect() as connection:
            return _health(connection)
    except (ConnectionError, ssl.SSLError):
        return b""


def _check_limit(connect: Callable[[], socket.socket]) -> None:
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect()) for _ in range(LIMIT)]
        for connection in held:  # answered, so counted by the server, and kept open
            assert _health(connection).startswith(b"HTTP/1.1 200")
        assert _health_on_new(connect) == b"", "a connection past the limit must be closed"
        held[0].close()
        deadline = time.monotonic() + 30
        while True:  # the server sees the close a moment later
            answer = _health_on_new(connect)
            if answer or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200"), "served again once one connection closed"


def test_the_https_listener_keeps_at_most_max_connections(running: Running) -> None:
    context = client_context([running.root])
    host, port = _address(running.server.https_url)

    def connect() -> socket.socket:
        raw = socket.create_connection((host, port), timeout=30)
        return context.wrap_socket(raw, server_hostname=host)

    _check_limit(connect)


def test_the_plain_http_listener_keeps_at_most_max_connections(running: Running) -> None:
    address = _address(running.server.http_url)
    _check_limit(lambda: socket.create_connection(address, timeout=30))
