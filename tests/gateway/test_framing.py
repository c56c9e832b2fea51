"""Request framing at the gateway (issue 22 review): whatever ``Transfer-Encoding`` and
``Content-Length`` a client combines, the gateway and the upstream read the same requests
(RFC 9112 sections 6 and 7), so no request reaches the upstream that the gateway did not
check. A generated matrix of header forms (name and value spellings, whitespace, duplicates,
other codings, obs-fold, with and without ``Content-Length``) goes to our gateway in front
of a real Starlette app under uvicorn; each request carries a second request to the
policy-protected ``/vault`` where a reader that frames the body differently would find it.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from ostiary.gateway.config import Route
from ostiary.gateway.server import Gateway
from ostiary.tls import client_context
from tests.gateway.conftest import CA, Issued, gateway_config, run_gateway
from tests.gateway.real_upstreams import Reached, starlette_upstream

HARDWARE_POLICY = "1.3.6.1.4.1.99999.7.1"
SMUGGLED = b"GET /vault/smuggled HTTP/1.1\r\nHost: door.example\r\n\r\n"
#: Sent after each case, so that a gateway that reads the case as we do closes at its end.
LAST = b"GET /public/last HTTP/1.1\r\nHost: door.example\r\nConnection: close\r\n\r\n"
#: A chunked body whose only chunk is the smuggled request (a reader by length or by the
#: close takes it as data; a reader that ignores the framing sees a request), and a chunked
#: body that ends at once, followed by the smuggled request.
BODIES = {
    "in-chunk": b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
    "after-last-chunk": b"0\r\n\r\n" + SMUGGLED,
}
NAMES = [
    b"Transfer-Encoding",
    b"transfer-encoding",
    b"TRANSFER-ENCODING",
    b"tRaNsFeR-eNcOdInG",
    b"Transfer-Encoding ",  # space before the colon (RFC 9112 5.1: 400)
    b"Transfer-Encoding\t",
    b" Transfer-Encoding",
    b"Transfer_Encoding",
    b"Transfer-Encodings",
    b"Content-Encoding",
]
CODINGS = [b"chunked", b"Chunked", b"CHUNKED", b"cHuNkEd"]
PADDING = [b"", b" ", b"\t", b"\x0b", b"\x0c", b"\x00", b"\xa0"]
LISTS = [
    b"gzip, chunked",
    b"gzip,chunked",
    b"gzip ,\tchunked",
    b"identity, chunked",
    b"chunked, identity",
    b"chunked, gzip",
    b"chunked, chunked",
    b"chunked,",
    b",chunked",
    b", chunked",
    b"chunked,,",
    b"gzip, , chunked",
    b"xchunked",
    b"chunkedx",
    b"chunked-x",
    b"chunk",
    b"chunked;q=1",
    b'"chunked"',
    b"chunk ed",
    b"chunked\x00",
    b"identity",
    b"gzip",
    b"deflate",
    b"compress",
    b"",
    b" ",
    b"\xe2\x80\x8bchunked",
]
FOLDED = [
    b"\r\n chunked",
    b"\r\n\tchunked",
    b"chunked\r\n ,identity",
    b"gzip\r\n , chunked",
    b"identity\r\n chunked",
]
DUPLICATES = [
    (b"chunked", b"chunked"),
    (b"chunked", b"identity"),
    (b"identity", b"chunked"),
    (b"gzip", b"chunked"),
    (b"chunked", b""),
    (b"", b"chunked"),
    (b"chunked", b"xchunked"),
]


@dataclass(frozen=True)
class Case:
    headers: tuple[bytes, ...]  # the header lines, without CRLF
    body: str
    content_length: bool

    @property
    def id(self) -> str:
        lines = " | ".join(repr(h)[2:-1] for h in self.headers)
        return f"{lines} + {self.body}{' + CL' if self.content_length else ''}"

    def request(self) -> bytes:
        body = BODIES[self.body]
        length = [b"Content-Length: %d" % len(body)] if self.content_length else []
        lines = [
            b"POST /public HTTP/1.1",
            b"Host: door.example",
            *self.headers,
            *length,
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body + LAST


def header_forms() -> Iterator[tuple[bytes, ...]]:
    for name in NAMES:
        yield (name + b": chunked",)
    for coding, before, after in itertools.product(CODINGS, PADDING, PADDING):
        if before == b"" or after == b"" or (coding == b"chunked" and before == after):
            yield (b"Transfer-Encoding:" + before + coding + after,)
    for value in LISTS + FOLDED:
        yield (b"Transfer-Encoding: " + value,)
    for first, second in DUPLICATES:
        yield (b"Transfer-Encoding: " + first, b"Transfer-Encoding: " + second)
        yield (b"Transfer-Encoding: " + first, b"transfer-encoding: " + second)
    # obs-fold in other headers, before and after the framing header
    yield (b"X-Note: a\r\n b", b"Transfer-Encoding: chunked")
    yield (b"Transfer-Encoding: chunked", b"X-Note: a\r\n\tb")
    yield (b"X-Note: a\r\n Transfer-Encoding: chunked",)
    yield (b"Host: door.example\r\n Transfer-Encoding: chunked",)
    yield (b"X-Note: a\r\n b",)
    yield (b"X-Note: a\r\n\tb",)


CASES = [
    Case(headers, body, content_length)
    for headers in dict.fromkeys(header_forms())
    for body in BODIES
    for content_length in (False, True)
]


def _rfc_framing(case: Case) -> str:
    """How RFC 9112 frames the case's body: ``"chunked"``, ``"length"``, ``"none"``, or
    ``"invalid"`` (the request must be refused). The ``Transfer-Encoding`` fields combine
    into one list (RFC 9110 5.3) of codings, case-insensitive, OWS (SP / HTAB) around
    elements, empty elements allowed (RFC 9110 5.6.1); ``chunked`` must be the last coding
    and appear once (RFC 9112 6.1); whitespace before the colon and obs-fold are refused
    (a server may instead unfold: we count that as refused, the stricter reading)."""
    codings: list[bytes] = []
    framing = "length" if case.content_length else "none"
    for line in case.headers:
        name, colon, value = line.partition(b":")
        if not colon or b"\r\n" in value or name != name.strip() or b" " in name:
            return "invalid"
        if name.lower() == b"transfer-encoding":
            framing = "chunked"
            codings += [c.strip(b" \t").lower() for c in value.split(b",")]
    if framing != "chunked":
        return framing
    codings = [c for c in codings if c]
    tokens = all(c.isascii() and c.replace(b"-", b"").isalnum() for c in codings)
    if not tokens or codings[-1:] != [b"chunked"] or codings.count(b"chunked") != 1:
        return "invalid"
    return "chunked"


@pytest.fixture(scope="module")
def app() -> Iterator[Reached]:
    with starlette_upstream() as reached:
        yield reached


@pytest.fixture(scope="module")
def gateway(ca: CA, app: Reached) -> Iterator[Gateway]:
    routes = (Route(prefix="/"), Route(prefix="/vault", policy_oids=(HARDWARE_POLICY,)))
    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{app.port}", routes=routes)) as gw:
        yield gw


def _status(
    context: ssl.SSLContext, port: int, request: bytes, session: ssl.SSLSession | None = None
) -> int:
    """The status of the first answer on one connection (0: closed without one); the TLS
    session is resumed when given (a full handshake per case would take most of the time)."""
    received = b""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls,
    ):
        tls.sendall(request)
        try:
            while chunk := tls.recv(65536):
                received += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
    return int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else 0


def _session(context: ssl.SSLContext, port: int) -> ssl.SSLSession | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(LAST)
        while tls.recv(65536):
            pass
        return tls.session


def test_no_transfer_encoding_form_smuggles_a_request_past_the_gateway(
    ca: CA, gateway: Gateway, app: Reached
) -> None:
    """Each case is refused with 400, or (only where RFC 9112 frames it) answered; and the
    request in the body never reaches the upstream as a request."""
    software: Issued = ca.issue("sw-framing", ("email:sw@example.com",))
    context = client_context([ca.authority.ca.root], identity=software.identity)
    session = _session(context, gateway.port)
    mark = app.mark()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(lambda c: _status(context, gateway.port, c.request(), session), CASES)
        )
    time.sleep(0.3)  # a request the upstream found in a body is handled after the answer
    reached = app.since(mark)
    assert [r for r in reached if r["path"].startswith("/vault")] == []
    wrong = [
        (case.id, _rfc_framing(case), status)
        for case, status in zip(CASES, statuses, strict=True)
        if status != 400 and not (status == 200 and _rfc_framing(case) != "invalid")
    ]
    assert wrong == [], f"{len(wrong)} of {len(CASES)}"
    # The twins: the plain forms are framed and answered, and reach the upstream.
    answered = {case.id for case, status in zip(CASES, statuses, strict=True) if status == 200}
    for plain in (
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: CHUNKED",
        b"Transfer-Encoding: gzip, chunked",
    ):
        for body in BODIES:
            assert Case((plain,), body, False).id in answered
    posts = [r for r in reached if r["path"] == "/public"]
    assert len(posts) >= len(answered)
