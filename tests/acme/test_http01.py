"""The http-01 validator against a real HTTP server on loopback: redirects, sizes, schemes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ostiary.acme.validation import (
    VALIDATORS,
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)

TOKEN = "tok3n-for-the-tests-0123456789abcdef"
KEY_AUTHORIZATION = TOKEN + ".thumbprint"


class Site:
    """path -> (status, headers, body); anything else 404."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.stalled = threading.Event()
        pages, stalled = self.pages, self.stalled

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/stall":
                    stalled.wait(5)
                status, headers, body = pages.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()
    try:
        yield site
    finally:
        site.stalled.set()
        site.server.shutdown()
        site.server.server_close()


def validate(
    site: Site, identifier: str = "localhost", kind: str = "dns", timeout: float = 2.0
) -> ValidationResult:
    context = ChallengeContext(
        challenge_type="http-01",
        identifier_type=kind,
        identifier_value=identifier,
        token=TOKEN,
        key_authorization=KEY_AUTHORIZATION,
    )
    settings = ValidationSettings(http_port=site.port, timeout=timeout)
    return asyncio.run(VALIDATORS["http-01"](context, settings))


def failure(site: Site, **kw: Any) -> ChallengeFailed:
    with pytest.raises(ChallengeFailed) as failed:
        validate(site, **kw)
    return failed.value


PATH = f"/.well-known/acme-challenge/{TOKEN}"


def test_the_key_authorization_with_a_trailing_newline_is_accepted(site: Site) -> None:
    site.pages[PATH] = (200, {}, KEY_AUTHORIZATION.encode() + b"\n")
    assert validate(site) == ValidationResult()
    assert validate(site, identifier="127.0.0.1", kind="ip") == ValidationResult()


def test_redirects_are_followed_up_to_ten(site: Site) -> None:
    for hop in range(10):
        target = f"/hop/{hop + 1}" if hop < 9 else "/answer"
        site.pages[PATH if hop == 0 else f"/hop/{hop}"] = (302, {"Location": target}, b"")
    site.pages["/answer"] = (200, {}, KEY_AUTHORIZATION.encode())
    assert validate(site) == ValidationResult()


def test_an_eleventh_redirect_fails(site: Site) -> None:
    for hop in range(11):
        site.pages[PATH if hop == 0 else f"/hop/{hop}"] = (
            302,
            {"Location": f"/hop/{hop + 1}"},
            b"",
        )
    site.pages["/hop/11"] = (200, {}, KEY_AUTHORIZATION.encode())
    failed = failure(site)
    assert failed.problem == "connection"
    assert "redirects" in failed.detail


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ((200, {}, b"something else"), "incorrectResponse"),
        ((200, {}, KEY_AUTHORIZATION.encode() + b"x" * 9000), "unauthorized"),
        ((404, {}, b""), "unauthorized"),
        ((302, {"Location": "ftp://127.0.0.1/x"}, b""), "connection"),
        ((302, {"Location": "file:///etc/passwd"}, b""), "connection"),
        ((302, {}, b""), "connection"),
    ],
    ids=["fail/wrong-body", "fail/too-large", "fail/404", "fail/ftp-redirect",
         "fail/file-redirect", "fail/redirect-without-location"],
)  # fmt: skip
def test_wrong_answers_fail_with_their_problem(
    site: Site, page: tuple[int, dict[str, str], bytes], problem: str
) -> None:
    site.pages[PATH] = page
    assert failure(site).problem == problem


def test_nothing_listening_is_a_connection_problem(site: Site) -> None:
    site.server.shutdown()
    site.server.server_close()
    assert failure(site).problem == "connection"


def test_wildcards_and_device_identifiers_are_not_http01s(site: Site) -> None:
    assert failure(site, identifier="*.localhost").problem == "malformed"
    assert failure(site, identifier="serial-1", kind="permanent-identifier").problem == "malformed"


def test_a_server_that_does_not_answer_in_time_is_a_connection_problem(site: Site) -> None:
    site.pages[PATH] = (302, {"Location": "/stall"}, b"")
    failed = failure(site, timeout=0.5)
    assert failed.problem == "connection"
    assert "in time" in failed.detail
