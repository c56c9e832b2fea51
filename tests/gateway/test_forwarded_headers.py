"""Identity and forwarding headers are the gateway's to set, whatever name a client spells
them with (issue 22, finding 2): our gateway in front of a real Starlette app under uvicorn
(ASGI) and a real Flask app under uvicorn's WSGI interface.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ostiary.gateway.server import Gateway
from tests.gateway.conftest import CA, Issued, gateway_config, header, run_gateway
from tests.gateway.real_upstreams import Reached, exchange, flask_upstream, starlette_upstream

SPOOFED = {
    "X_Client_Subject": "CN=admin",
    "X_Client_SAN": "email:admin@example.com",
    "x_client_serial": "01",
    "X-Client-Cert": "-----BEGIN%20CERTIFICATE-----admin",
    "Forwarded": "for=10.6.6.6;proto=https;host=admin.example",
    "X-Real-IP": "10.6.6.6",
    "X-Forwarded-Host": "admin.example",
    "X-Forwarded-Port": "9999",
    "X-Forwarded-Prefix": "/admin",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X_Forwarded_For": "10.6.6.6",
    "X-Forwarded-For": "10.6.6.6",
    "X-FORWARDED-PROTO": "http",
}


@pytest.fixture(scope="module")
def alice(ca: CA) -> Issued:
    return ca.issue("alice", ("email:alice@example.com",))


@pytest.fixture(scope="module")
def asgi() -> Iterator[Reached]:
    with starlette_upstream() as reached:
        yield reached


@pytest.fixture(scope="module")
def wsgi() -> Iterator[Reached]:
    with flask_upstream() as reached:
        yield reached


@pytest.fixture(scope="module")
def asgi_gateway(ca: CA, asgi: Reached) -> Iterator[Gateway]:
    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{asgi.port}")) as gw:
        yield gw


@pytest.fixture(scope="module")
def wsgi_gateway(ca: CA, wsgi: Reached) -> Iterator[Gateway]:
    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{wsgi.port}")) as gw:
        yield gw


def request(extra: dict[str, str], host: bytes = b"door.example") -> bytes:
    lines = b"".join(f"{k}: {v}\r\n".encode() for k, v in extra.items())
    return b"GET /who HTTP/1.1\r\nHost: " + host + b"\r\n" + lines + b"Connection: close\r\n\r\n"


def test_wsgi_app_reads_only_the_gateway_identity_despite_underscored_twins(
    ca: CA, wsgi_gateway: Gateway, alice: Issued
) -> None:
    """WSGI folds ``X_Client_Subject`` into ``HTTP_X_CLIENT_SUBJECT`` and joins it with ours,
    the client's value first; the gateway drops every name with ``_``, so Flask reads ours."""
    status, body = exchange(ca, alice, wsgi_gateway.port, request(SPOOFED))
    assert status == 200, body
    seen = json.loads(body)
    assert seen["x-client-subject"] == "CN=alice"
    assert seen["x-client-san"] == "email:alice@example.com"
    environ = seen["environ"]
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "https"
    assert environ["HTTP_X_FORWARDED_HOST"] == "door.example"
    assert "admin" not in json.dumps(environ)
    assert "HTTP_X_CLIENT_CERT" not in environ
    assert "HTTP_X_REAL_IP" not in environ


def test_spoofed_forwarding_and_identity_headers_are_replaced_by_the_gateway(
    ca: CA, asgi_gateway: Gateway, asgi: Reached, alice: Issued
) -> None:
    mark = asgi.mark()
    status, body = exchange(ca, alice, asgi_gateway.port, request(SPOOFED))
    assert status == 200, body
    (seen,) = asgi.since(mark)
    names = [name for name, _ in seen["headers"]]
    assert not [name for name in names if "_" in name]
    assert "admin" not in json.dumps(seen["headers"])
    assert "10.6.6.6" not in json.dumps(seen["headers"])
    assert header(seen, "x-client-subject") == ["CN=alice"]
    assert header(seen, "x-client-cert") == []
    assert header(seen, "x-real-ip") == []
    assert header(seen, "x-original-url") == []
    assert header(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert header(seen, "x-forwarded-proto") == ["https"]
    assert header(seen, "x-forwarded-host") == ["door.example"]
    assert header(seen, "forwarded") == ['for=127.0.0.1;proto=https;host="door.example"']


def test_ordinary_headers_pass_and_forwarded_host_follows_the_host_header(
    ca: CA, asgi_gateway: Gateway, asgi: Reached, alice: Issued
) -> None:
    mark = asgi.mark()
    extra = {"X-Request-Id": "r-1", "Accept": "application/json"}
    status, _ = exchange(ca, alice, asgi_gateway.port, request(extra, host=b"door.example:8443"))
    assert status == 200
    (seen,) = asgi.since(mark)
    assert header(seen, "x-request-id") == ["r-1"]
    assert header(seen, "accept") == ["application/json"]
    assert header(seen, "host") == ["door.example:8443"]
    assert header(seen, "x-forwarded-host") == ["door.example:8443"]
    assert header(seen, "forwarded") == ['for=127.0.0.1;proto=https;host="door.example:8443"']


def test_a_second_host_header_is_refused(
    ca: CA, asgi_gateway: Gateway, asgi: Reached, alice: Issued
) -> None:
    mark = asgi.mark()
    head = request({"Host": "admin.example"})
    status, body = exchange(ca, alice, asgi_gateway.port, head)
    assert (status, body) == (400, b"bad request: more than one Host header\n")
    assert exchange(ca, alice, asgi_gateway.port, request({}))[0] == 200
    assert len(asgi.since(mark)) == 1
