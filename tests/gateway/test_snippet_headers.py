"""The nginx and Caddy snippets set or clear every identity and forwarding header (issue 22
follow-up): the real nginx and Caddy, started with the generated snippets, in front of a real
Flask app under uvicorn's WSGI interface, which folds ``X_Client_Subject`` into
``HTTP_X_CLIENT_SUBJECT`` and joins it with the proxy's value, the client's first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway.conftest import CA, Issued
from tests.gateway.real_upstreams import Reached, flask_upstream
from tests.gateway.test_forwarded_headers import SPOOFED
from tests.gateway.test_relying_parties import Nginx, run_caddy, run_nginx, snippet

SPOOFED_TOO = {
    **SPOOFED,
    "X-Client_Subject": "CN=admin",
    "X-Forwarded-Client_Cert": "Hash=admin",
    "X-Real_IP": "10.6.6.6",
    "X-Client-Verify": "NONE-admin",
}


@pytest.fixture(scope="module")
def wsgi() -> Iterator[Reached]:
    with flask_upstream() as reached:
        yield reached


@pytest.fixture(scope="module")
def nginx_wsgi(ca: CA, wsgi: Reached, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with run_nginx(ca, wsgi.port, tmp_path_factory.mktemp("nginx-wsgi")) as running:
        yield running


@pytest.fixture(scope="module")
def caddy_wsgi(ca: CA, wsgi: Reached, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with run_caddy(ca, wsgi.port, tmp_path_factory.mktemp("caddy-wsgi")) as port:
        yield port


@pytest.fixture(scope="module")
def alice(ca: CA) -> Issued:
    return ca.issue("alice", ("email:alice@example.com",))


def environ_behind(ca: CA, alice: Issued, port: int, host: str, sent: dict[str, str]) -> Any:
    with ca.client(alice, port, host=host) as client:
        answer = client.get("/who", headers=sent)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_wsgi_app_behind_nginx_reads_only_the_snippets_headers(
    ca: CA, nginx_wsgi: Nginx, alice: Issued
) -> None:
    seen = environ_behind(ca, alice, nginx_wsgi.port, "127.0.0.1", SPOOFED_TOO)
    environ = seen["environ"]
    assert seen["x-client-subject"] == "CN=alice"
    assert environ["HTTP_X_CLIENT_VERIFY"] == "SUCCESS"
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert environ["HTTP_X_REAL_IP"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "https"
    assert environ["HTTP_X_FORWARDED_HOST"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_PORT"] == str(nginx_wsgi.port)
    assert "admin" not in json.dumps(environ)
    assert "10.6.6.6" not in json.dumps(environ)
    assert "9999" not in json.dumps(environ)
    for cleared in ("FORWARDED", "X_FORWARDED_PREFIX", "X_ORIGINAL_URL", "X_REWRITE_URL"):
        assert f"HTTP_{cleared}" not in environ


def test_wsgi_app_behind_caddy_reads_only_the_snippets_headers(
    ca: CA, caddy_wsgi: int, alice: Issued
) -> None:
    seen = environ_behind(ca, alice, caddy_wsgi, "localhost", SPOOFED_TOO)
    environ = seen["environ"]
    assert seen["x-client-subject"] == "CN=alice"
    assert environ["HTTP_X_CLIENT_VERIFY"] == "SUCCESS"
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert environ["HTTP_X_REAL_IP"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "https"
    assert environ["HTTP_X_FORWARDED_HOST"] == f"localhost:{caddy_wsgi}"
    assert "admin" not in json.dumps(environ)
    assert "10.6.6.6" not in json.dumps(environ)
    for cleared in ("FORWARDED", "X_FORWARDED_PREFIX", "X_ORIGINAL_URL", "X_REWRITE_URL"):
        assert f"HTTP_{cleared}" not in environ


def test_wsgi_app_behind_caddy_keeps_ordinary_headers(
    ca: CA, caddy_wsgi: int, alice: Issued
) -> None:
    """The twin: dropping the underscored names leaves the others alone."""
    environ = environ_behind(ca, alice, caddy_wsgi, "localhost", {"X-Request-Id": "r-1"})
    assert environ["environ"]["HTTP_X_REQUEST_ID"] == "r-1"


def test_nginx_snippet_never_turns_underscores_in_headers_on(ca: CA) -> None:
    """nginx's default drops the underscored names; a directive in the snippet would undo it."""
    files = ["--cert", str(ca.server.cert_file), "--key", str(ca.server.key_file)]
    nginx = snippet("nginx", "--ca-root", str(ca.ca_file), *files)
    directives = [line.split()[0] for line in nginx.splitlines() if line.strip()]
    assert "underscores_in_headers" not in directives
    assert "ignore_invalid_headers" not in directives
    caddy = snippet("caddy", "--ca-root", str(ca.root_file), *files)
    assert "header_up -*_*" in caddy
