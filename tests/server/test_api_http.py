"""The HTTPS listener's protocol answers its direct endpoints itself, and HTTP/1.1 still holds.

A uvicorn server on plain loopback HTTP with :class:`ApiHttpProtocol`, one direct endpoint
(``POST /echo``, which answers the body it got) and an ASGI app that answers every request
itself with where it was served (``app GET /x``): so each answer tells which path served
it. Requests are written as raw bytes, so that pipelining, ``Expect`` and bodies past the
cap are sent exactly as a client would.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httptools
import httpx
import pytest
import uvicorn
from cryptography import x509
from sqlalchemy.exc import OperationalError

from ostiary.core.errors import Unauthorized
from ostiary.server.api_http import ApiHttpProtocol, DirectEndpoint
from ostiary.server.app import DirectRoute, create_app
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.models import CertificateAnswer
from ostiary.server.problems import PROBLEM_JSON
from ostiary.store import CertificateRecord
from ostiary.tls import client_context
from tests.server.conftest import Running
from tests.server.test_direct_route import REFUSALS, ROOT, Call, Setup, _signed

ECHO = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Parsed:
    responses: list[Response] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body


def exchange(port: int, data: bytes, *, answers: int = 1, timeout: float = 10) -> list[Response]:
    """Write ``data`` on one connection; read until ``answers`` responses came or it closed."""
    parsed = _Parsed()

    def complete() -> None:
        parsed.responses.append(
            Response(parser.get_status_code(), parsed.headers, bytes(parsed.body))
        )
        parsed.headers, parsed.body = {}, bytearray()

    parsed.on_message_complete = complete  # type: ignore[attr-defined]
    parser = httptools.HttpResponseParser(parsed)  # finds the callbacks when made
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        while len(parsed.responses) < answers:
            chunk = connection.recv(65536)
            if not chunk:
                break
            parser.feed_data(chunk)
    return parsed.responses


def post_echo(body: bytes, *, extra: bytes = b"") -> bytes:
    return ECHO + extra + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)


@dataclass
class Served:
    port: int
    answered: list[bytes]
    server: uvicorn.Server


async def _app(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    body = f"app {scope['method']} {scope['path']}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serve(answer: Callable[[bytes], Any] | None = None, **config: Any) -> Iterator[Served]:
    """uvicorn with the protocol, ``POST /echo`` direct; stopped on the way out."""
    answered: list[bytes] = []

    async def echo(body: bytes, peer: str | None) -> bytes:
        assert peer == "127.0.0.1"
        answered.append(body)
        if answer is not None:
            result: bytes = await answer(body)
            return result
        return b"echo " + body

    protocol = ApiHttpProtocol.serving({("POST", "/echo"): DirectEndpoint(echo, status=201)})
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    options = {"lifespan": "off", "log_config": None, "access_log": False, **config}
    server = uvicorn.Server(uvicorn.Config(_app, http=protocol, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(listener.getsockname()[1], answered, server)
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve() as served:
        yield served


def test_a_direct_endpoint_is_answered_by_the_protocol_and_the_rest_by_the_app(
    served: Served,
) -> None:
    (direct,) = exchange(served.port, post_echo(b'{"a": 1}'))
    assert (direct.status, direct.body) == (201, b'echo {"a": 1}')
    assert direct.headers["content-type"] == "application/json"
    assert direct.headers["content-length"] == str(len(direct.body))
    assert "date" in direct.headers and "connection" not in direct.headers
    (other,) = exchange(served.port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    assert other.body == b"app GET /x"
    # Another method on the same path, or a path that merely starts the same, is the app's.
    (get,) = exchange(served.port, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert get.body == b"app GET /echo"
    (longer,) = exchange(
        served.port, b"POST /echo/more HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    )
    assert longer.body == b"app POST /echo/more"


def test_a_query_string_does_not_change_the_route(served: Served) -> None:
    (answer,) = exchange(served.port, post_echo(b"{}").replace(b"POST /echo ", b"POST /echo?x=1 "))
    assert (answer.status, answer.body) == (201, b"echo {}")


def test_pipelined_requests_are_answered_in_order() -> None:
    async def slow_first(body: bytes) -> bytes:
        if body == b"1":
            await asyncio.sleep(0.3)  # everything below arrives while this is in progress
        return b"echo " + body

    get = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
    with serve(slow_first) as served:
        data = post_echo(b"1") + get + post_echo(b"2") + get
        answers = exchange(served.port, data, answers=4)
        # After the pipeline, the next request on a fresh connection is direct again.
        (later,) = exchange(served.port, post_echo(b"3"))
    assert [(a.status, a.body) for a in answers] == [
        (201, b"echo 1"),
        (200, b"app GET /x"),
        # Behind an unfinished request uvicorn queues it, and the app serves it.
        (200, b"app POST /echo"),
        (200, b"app GET /x"),
    ]
    assert served.answered == [b"1", b"3"]
    assert later.body == b"echo 3"


def test_a_keep_alive_connection_serves_many_direct_requests(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        for number in range(5):
            connection.sendall(post_echo(str(number).encode()))
            reply = b""
            while not reply.endswith(f"echo {number}".encode()):
                chunk = connection.recv(65536)
                assert chunk, "the server closed a keep-alive connection"
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 201 Created\r\n")


@pytest.mark.parametrize(
    ("request_line", "header"),
    [
        pytest.param(b"", b"Connection: close\r\n", id="connection-close"),
        pytest.param(b"HTTP/1.0", b"", id="http-1.0"),
    ],
)
def test_the_connection_closes_when_the_client_asks(
    served: Served, request_line: bytes, header: bytes
) -> None:
    data = post_echo(b"{}", extra=header)
    if request_line:
        data = data.replace(b"HTTP/1.1", request_line, 1)
    answers = exchange(served.port, data + post_echo(b"never"), answers=2)
    assert [a.body for a in answers] == [b"echo {}"]
    assert answers[0].headers["connection"] == "close"


def test_a_wrong_media_type_is_415_and_the_connection_stays_usable(served: Served) -> None:
    wrong = post_echo(b"{}").replace(b"application/json", b"text/plain")
    answers = exchange(served.port, wrong + post_echo(b"after"), answers=2)
    assert [a.status for a in answers] == [415, 201]
    assert answers[0].headers["content-type"] == PROBLEM_JSON
    assert b"the body must be application/json, not text/plain" in answers[0].body
    assert answers[1].body == b"echo after"
    missing = post_echo(b"{}").replace(b"Content-Type: application/json\r\n", b"")
    (refused,) = exchange(served.port, missing)
    assert refused.status == 415 and b"not none" in refused.body


def test_a_body_over_the_cap_is_refused_as_soon_as_it_is_known(served: Served) -> None:
    count = len(served.answered)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        # Declared: answered after the head, before any of the body is sent.
        connection.sendall(ECHO + b"Content-Length: %d\r\n\r\n" % (MAX_BODY_SIZE + 1))
        head = connection.recv(65536)
        assert head.startswith(b"HTTP/1.1 413 ")
        assert b'"limit":65536' in head.replace(b" ", b"")
        # The rest of the body is read and dropped; the connection still serves.
        connection.sendall(b" " * (MAX_BODY_SIZE + 1) + post_echo(b"after"))
        reply = b""
        while not reply.endswith(b"echo after"):
            chunk = connection.recv(65536)
            assert chunk, "the connection was closed"
            reply += chunk
    chunk = b" " * 8192
    chunked = ECHO + b"Transfer-Encoding: chunked\r\n\r\n" + (b"2000\r\n" + chunk + b"\r\n") * 9
    (streamed,) = exchange(served.port, chunked + b"0\r\n\r\n")
    assert streamed.status == 413
    assert served.answered[count:] == [b"after"]


def test_a_body_at_the_cap_is_taken(served: Served) -> None:
    body = b" " * MAX_BODY_SIZE
    (answer,) = exchange(served.port, post_echo(body))
    assert answer.status == 201 and answer.body == b"echo " + body


def test_expect_100_continue_is_answered_before_the_body(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        connection.sendall(ECHO + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert connection.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(b"{}")
        reply = b""
        while not reply.endswith(b"echo {}"):
            reply += connection.recv(65536)
        assert reply.startswith(b"HTTP/1.1 201 ")


def test_a_refusal_known_from_the_head_does_not_wait_for_the_body(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        wrong = ECHO.replace(b"application/json", b"text/plain")
        connection.sendall(wrong + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        reply = connection.recv(65536)
    assert reply.startswith(b"HTTP/1.1 415 ")  # no 100 Continue: the body is not wanted


def test_errors_of_the_endpoint_are_problem_documents(caplog: pytest.LogCaptureFixture) -> None:
    async def refuse(body: bytes) -> bytes:
        if body == b"token":
            raise Unauthorized("the token is not valid")
        if body == b"database":
            raise OperationalError("INSERT", None, ConnectionRefusedError("db.internal:5432"))
        raise RuntimeError("secret internal state")

    with serve(refuse) as served:
        (unauthorized,) = exchange(served.port, post_echo(b"token"))
        (unavailable,) = exchange(served.port, post_echo(b"database"))
        with caplog.at_level(logging.ERROR):
            (bug,) = exchange(served.port, post_echo(b"bug"))
    assert unauthorized.status == 401
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    assert b"the token is not valid" in unauthorized.body
    assert unavailable.status == 503 and unavailable.headers["retry-after"] == "5"
    assert b"db.internal" not in unavailable.body
    assert bug.status == 500 and b"secret" not in bug.body
    assert bug.headers["content-type"] == PROBLEM_JSON
    assert "unexpected error in POST /echo" in caplog.text


def test_the_access_log_line_is_uvicorns(caplog: pytest.LogCaptureFixture) -> None:
    with serve(access_log=True, forwarded_allow_ips="127.0.0.1") as served:
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):
            exchange(served.port, post_echo(b"{}"))
            exchange(served.port, post_echo(b"{}", extra=b"X-Forwarded-For: 203.0.113.7\r\n"))
            exchange(served.port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 3
    direct, forwarded, routed = lines
    assert direct.startswith("127.0.0.1:") and direct.endswith(' - "POST /echo HTTP/1.1" 201')
    assert forwarded == '203.0.113.7:0 - "POST /echo HTTP/1.1" 201'
    assert routed.startswith("127.0.0.1:") and routed.endswith(' - "GET /x HTTP/1.1" 200')


def test_a_root_path_leaves_every_request_to_the_app() -> None:
    with serve(root_path="/prefix") as served:
        (answer,) = exchange(served.port, post_echo(b"{}"))
    assert answer.body == b"app POST /prefix/echo"
    assert served.answered == []


def test_a_stopping_server_finishes_the_answer_in_progress() -> None:
    started = threading.Event()

    async def slow(body: bytes) -> bytes:
        started.set()
        await asyncio.sleep(0.5)
        return b"finished"

    with serve(slow) as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
            connection.sendall(post_echo(b"{}"))
            assert started.wait(5)
            served.server.should_exit = True
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 201 ")
    assert b"Connection: close\r\n" in reply and reply.endswith(b"finished")


def test_a_client_that_leaves_before_the_answer_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    async def wait(body: bytes) -> bytes:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return b"echo " + body

    with caplog.at_level(logging.WARNING), serve(wait) as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
            connection.sendall(post_echo(b"{}"))
            time.sleep(0.1)
        time.sleep(0.1)
        release.set()
        time.sleep(0.1)
        (after,) = exchange(served.port, post_echo(b"next"))
    assert after.body == b"echo next"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- the CA server: POST /sign over TLS is answered in the protocol, as the app answers it


def _answers_over_the_wire_and_through_the_router(
    running: Running, call: Call, routed_call: Call | None = None
) -> tuple[httpx.Response, httpx.Response]:
    async def run() -> tuple[httpx.Response, httpx.Response]:
        verify = client_context([running.root])
        async with httpx.AsyncClient(base_url=running.server.https_url, verify=verify) as wire:
            if call.before is not None:
                first = await call.before.send(wire, "/sign")
                assert first.status_code == 201, first.text
            over_the_wire = await call.send(wire, "/sign")
        transport = httpx.ASGITransport(
            app=create_app(running.context), root_path=ROOT, raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="https://ca.test") as app:
            routed = await (routed_call or call).send(app, f"{ROOT}/sign")
        return over_the_wire, routed

    return asyncio.run(run())


@pytest.fixture
def app_never_sees_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any ``POST /sign`` that reaches the app's ``DirectRoute`` (not one under a
    root path: the router serves those)."""
    original = DirectRoute.__call__

    async def watched(self: DirectRoute, scope: Any, receive: Any, send: Any) -> None:
        assert scope.get("path") != "/sign", "POST /sign reached the ASGI app"
        await original(self, scope, receive, send)

    monkeypatch.setattr(DirectRoute, "__call__", watched)


WIRE_CASES = [
    case
    for case in REFUSALS
    if case.id not in ("fail/too-large-streamed", "fail/too-large-declared")
]


@pytest.mark.usefixtures("app_never_sees_sign")
@pytest.mark.parametrize(("case", "status"), WIRE_CASES)
def test_the_server_refuses_sign_in_its_protocol_as_the_app_does(
    running: Running, case: Callable[[Setup], Call], status: int
) -> None:
    setup = Setup(create_app(running.context), running.context, running.provisioners)
    before = running.counts()
    over_the_wire, routed = _answers_over_the_wire_and_through_the_router(running, case(setup))
    assert over_the_wire.status_code == routed.status_code == status, over_the_wire.text
    assert over_the_wire.content == routed.content
    ignored = ("date", "connection")
    assert {k: v for k, v in over_the_wire.headers.items() if k not in ignored} == dict(
        routed.headers.items()
    )
    if status != 409:  # the replayed case spent its token once, on purpose
        assert running.counts() == before


@pytest.mark.usefixtures("app_never_sees_sign")
def test_the_server_issues_in_its_protocol_as_the_app_does(running: Running) -> None:
    setup = Setup(create_app(running.context), running.context, running.provisioners)
    before = running.count(CertificateRecord)
    over_the_wire, routed = _answers_over_the_wire_and_through_the_router(
        running, _signed(setup), _signed(setup)
    )
    assert over_the_wire.status_code == routed.status_code == 201, over_the_wire.text
    assert over_the_wire.headers["content-type"] == routed.headers["content-type"]
    answer = CertificateAnswer.model_validate_json(over_the_wire.content)
    assert answer.model_dump_json().encode() == over_the_wire.content
    leaf = x509.load_pem_x509_certificate(answer.certificate.encode())
    assert answer.chain == list(running.context.chain_of(leaf))
    assert running.count(CertificateRecord) == before + 2
