"""The ASGI TLS extension reaches the app: real uvicorn, real handshakes, our contexts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.server.runner import bind
from ostiary.server.tls_scope import (
    TLSScopeH11Protocol,
    TLSScopeHttpToolsProtocol,
    client_certificate,
)
from ostiary.tls import TLSIdentity, client_context, server_context
from tests.conftest import TestCA, make_test_ca

NOW = datetime.now(UTC)


async def echo_tls(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Answers with the scope's TLS extension (or null) and the certificate it names."""
    tls = scope.get("extensions", {}).get("tls")
    certificate = client_certificate(scope)
    body = json.dumps(
        {"tls": tls, "subject": certificate.subject.rfc4514_string() if certificate else None}
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Stack:
    """An HTTP protocol with the event loop it runs on in production or in tests."""

    protocol: type[asyncio.Protocol]
    loop_factory: Callable[[], asyncio.AbstractEventLoop]


@pytest.fixture(
    params=[
        pytest.param(
            Stack(TLSScopeHttpToolsProtocol, uvloop.new_event_loop), id="httptools-uvloop"
        ),
        pytest.param(Stack(TLSScopeH11Protocol, asyncio.new_event_loop), id="h11-asyncio"),
    ]
)
def stack(request: pytest.FixtureRequest) -> Stack:
    stack: Stack = request.param
    return stack


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return make_test_ca(now=NOW - timedelta(days=30))


def identity(ca: TestCA, name: str, *, profile: str = "client", **kwargs: object) -> TLSIdentity:
    kwargs.setdefault("now", NOW)
    certificate, key = ca.issue(name, (name,), profile=profile, **kwargs)  # type: ignore[arg-type]
    return TLSIdentity((certificate, ca.intermediate), key)  # type: ignore[arg-type]


@contextmanager
def serve(
    ca: TestCA, stack: Stack, *, tls: bool = True, check_client_time: bool = True
) -> Iterator[str]:
    listener = bind("127.0.0.1:0")
    port = listener.getsockname()[1]
    options: dict[str, object] = {}
    if tls:
        context = server_context(
            identity(ca, "127.0.0.1", profile="server"),
            client_certificates="optional",
            client_trust=(ca.root, ca.intermediate),
            check_client_time=check_client_time,
        )
        options["ssl_context_factory"] = lambda _config, _default: context
    server = uvicorn.Server(
        uvicorn.Config(echo_tls, http=stack.protocol, lifespan="off", log_config=None, **options)
    )

    def run() -> None:
        with asyncio.Runner(loop_factory=stack.loop_factory) as runner:
            runner.run(server.serve(sockets=[listener]))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_verified_client_certificate_is_in_the_asgi_tls_extension(
    ca: TestCA, stack: Stack
) -> None:
    alice = identity(ca, "alice@example.com")
    with (
        serve(ca, stack) as url,
        httpx.Client(verify=client_context([ca.root], identity=alice)) as c,
    ):
        answer = c.get(url).json()
    tls = answer["tls"]
    assert answer["subject"] == "CN=alice@example.com"
    assert tls["client_cert_name"] == "CN=alice@example.com"
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] in (0x0303, 0x0304)
    leaf = x509.load_pem_x509_certificate(tls["client_cert_chain"][0].encode())
    assert leaf.public_bytes(serialization.Encoding.DER) == alice.certificate.public_bytes(
        serialization.Encoding.DER
    )


def test_without_a_client_certificate_the_chain_is_empty(ca: TestCA, stack: Stack) -> None:
    with serve(ca, stack) as url, httpx.Client(verify=client_context([ca.root])) as client:
        answer = client.get(url).json()
    assert answer["tls"]["client_cert_chain"] == []
    assert answer["subject"] is None


def test_plain_http_has_no_tls_extension(ca: TestCA, stack: Stack) -> None:
    with serve(ca, stack, tls=False) as url, httpx.Client() as client:
        assert client.get(url).json() == {"tls": None, "subject": None}


def test_a_certificate_from_another_ca_fails_the_handshake(ca: TestCA, stack: Stack) -> None:
    stranger_ca = make_test_ca(now=NOW)
    stranger = identity(stranger_ca, "mallory@example.com")
    with (
        serve(ca, stack) as url,
        httpx.Client(verify=client_context([ca.root], identity=stranger)) as c,
    ):
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            c.get(url)


def test_each_connection_carries_its_own_certificate(ca: TestCA, stack: Stack) -> None:
    alice, bob = identity(ca, "alice@example.com"), identity(ca, "bob@example.com")
    with serve(ca, stack) as url:
        with (
            httpx.Client(verify=client_context([ca.root], identity=alice)) as a,
            httpx.Client(verify=client_context([ca.root], identity=bob)) as b,
        ):
            for _ in range(3):  # keep-alive: several requests on each connection
                assert a.get(url).json()["subject"] == "CN=alice@example.com"
                assert b.get(url).json()["subject"] == "CN=bob@example.com"


def test_an_expired_certificate_passes_the_handshake_only_when_time_is_left_to_the_app(
    ca: TestCA,
    stack: Stack,
) -> None:
    old = identity(ca, "old@example.com", now=NOW - timedelta(days=10), lifetime=timedelta(days=1))
    with serve(ca, stack) as url, httpx.Client(verify=client_context([ca.root], identity=old)) as c:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            c.get(url)
    with (
        serve(ca, stack, check_client_time=False) as url,
        httpx.Client(verify=client_context([ca.root], identity=old)) as client,
    ):
        assert client.get(url).json()["subject"] == "CN=old@example.com"
