"""Bodies sent without a length (``Transfer-Encoding: chunked``) are capped on every route.

A real ``ostiary ca serve`` process; an anonymous client streams many MiB to each POST route
of the app (every one the app has, so a new route cannot escape) and must get its answer
(413, or a refusal made before reading) after at most the cap plus what sits in the socket
buffers, while the server's resident memory stays within a bound. Before the fix the
remote-signing routes read the whole body, then answered 401.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.routing import iter_route_contexts

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.server.app import create_app
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.store import Store, migrate
from ostiary.tls import client_context
from tests.server.conftest import Provisioners, material_for
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve

#: What the client would send in all; the old code held all of it before answering.
TOTAL = 96 * 1024 * 1024
CHUNK = 1024 * 1024
#: The answer must come before this much was sent: the cap, plus socket buffers on both sides.
MAX_SENT_BEFORE_ANSWER = 24 * 1024 * 1024
#: How much the server's peak resident memory may grow over the whole table.
MAX_RSS_GROWTH = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def server(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("streamed")
    ca: CAFolder = make_ca_folder(
        ca_material, provisioners, f"sqlite:///{folder / 'ca.db'}", folder / "ca"
    )
    served = start_serve(ca, folder / "serve.log")
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def routes(ca_material: CAMaterial, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every path of the app that takes POST, path parameters filled in."""
    folder = tmp_path_factory.mktemp("routes")
    url = f"sqlite:///{folder / 'ca.db'}"
    migrate(url)
    store = Store.from_url(url)
    try:
        app = create_app(Authority(material_for(ca_material, url, folder / "ca"), store))
    finally:
        store.dispose()
    paths = set()
    for route in iter_route_contexts(app.routes):  # routers included in routers, flattened
        if route.path and route.methods and "POST" in route.methods:
            paths.add(re.sub(r"\{[^}]+\}", "x1", route.path))
    return sorted(paths)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of process ``pid``, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def answer_started(connection: socket.socket, head: bytearray) -> bool:
    """Whether answer bytes have arrived (kept in ``head``), without blocking. A readable
    TLS socket may hold only post-handshake messages (session tickets), not an answer.
    """
    if not select.select([connection], [], [], 0)[0]:
        return False
    connection.setblocking(False)
    try:
        data = connection.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    finally:
        connection.setblocking(True)
    head.extend(data)
    return True  # data, or the end of the stream


def stream_until_answered(
    url: str, path: str, context: ssl.SSLContext | None, content_type: str
) -> tuple[int, int]:
    """POST ``path`` chunked, up to :data:`TOTAL` bytes, stopping at the first answer byte;
    the status and how many body bytes were sent before the answer came. Status 0: the
    server reset the connection (the plain-HTTP listener closes after its 413, and a client
    still sending may get the reset before the answer).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    raw = socket.create_connection((host, port), timeout=30)
    connection: socket.socket = (
        context.wrap_socket(raw, server_hostname=host) if context is not None else raw
    )
    head = bytearray()
    sent = 0
    try:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = memoryview(b"%x\r\n%b\r\n" % (CHUNK, b"{" * CHUNK))
        answered = False
        while sent < TOTAL and not answered:
            view = chunk
            while view and not answered:
                if select.select([], [connection], [], 0.05)[1]:
                    connection.setblocking(False)
                    try:
                        written = connection.send(view)
                    except (ssl.SSLWantWriteError, BlockingIOError):
                        written = 0
                    finally:
                        connection.setblocking(True)
                    view = view[written:]
                    sent += written
                answered = answer_started(connection, head)
        if not answered:
            connection.sendall(b"0\r\n\r\n")
        deadline = time.monotonic() + 30
        while b"\r\n" not in head and time.monotonic() < deadline:
            data = connection.recv(65536)
            if not data:
                break
            head.extend(data)
    except (ConnectionResetError, BrokenPipeError):
        return 0, sent
    finally:
        connection.close()
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", bytes(head))
    assert match, f"{path}: no HTTP answer: {bytes(head[:200])!r}"
    return int(match.group(1)), sent


def test_every_post_route_answers_a_streamed_oversized_body_without_holding_it(
    server: ServeProcess, routes: list[str]
) -> None:
    context = client_context([server.root])
    assert "/signing/keys/x1/sign" in routes
    assert "/signing/keys/x1/assertion" in routes
    # Warm up: the first request of each route imports and caches what it needs.
    for path in routes:
        stream_until_answered_small(server.https_url, path, context)
    before = memory_kib(server.process.pid)
    results = {}
    for path in routes:
        status, sent = stream_until_answered(server.https_url, path, context, "application/json")
        results[path] = (status, sent)
    # The plain-HTTP listener (OCSP over POST) has its own parser and cap.
    results["http:/ocsp"] = stream_until_answered(
        server.http_url, "/ocsp", None, "application/ocsp-request"
    )
    after = memory_kib(server.process.pid)
    late = {p: r for p, r in results.items() if r[1] > MAX_SENT_BEFORE_ANSWER}
    assert not late, f"answered only after the upload: {late}"
    # Every HTTPS route answers (uvicorn reads and drops the rest); the plain listener may
    # reset a client that keeps sending after its 413.
    closed_ok = {"http:/ocsp"}
    accepted = {
        p: r
        for p, r in results.items()
        if not (400 <= r[0] < 500 or (r[0] == 0 and p in closed_ok))
    }
    assert not accepted, f"not refused: {accepted}"
    for path in ("/signing/keys/x1/sign", "/signing/keys/x1/assertion"):
        assert results[path][0] in (401, 413), results[path]
    assert results["/sign"][0] == 413
    assert results["/requests"][0] == 413
    growth = (after["VmHWM"] - before["VmHWM"]) * 1024
    assert growth < MAX_RSS_GROWTH, f"peak RSS grew {growth >> 20} MiB: {before} -> {after}"
    assert (after["VmRSS"] - before["VmRSS"]) * 1024 < MAX_RSS_GROWTH


def stream_until_answered_small(url: str, path: str, context: ssl.SSLContext) -> None:
    """One small chunked POST (a few KiB, under the cap) to ``path``, answer read."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        body = b"{}"
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
            + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        )
        while connection.recv(65536):
            pass


def test_a_streamed_body_within_the_cap_is_read(server: ServeProcess) -> None:
    """The twin: a chunked body under the cap reaches the route (a bad token: 401 from the
    route's own check, not a 413)."""
    context = client_context([server.root])
    parts = urlsplit(server.https_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    body = b'{"csr": "x", "token": "y", "pad": "' + b"a" * (MAX_BODY_SIZE - 100) + b'"}'
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        connection.sendall(
            f"POST /requests HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n".encode()
            + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"body-too-large" not in answer
