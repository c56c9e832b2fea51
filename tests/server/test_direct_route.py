"""``POST /sign`` is served ahead of FastAPI (``DirectRoute``) and answers as the route would.

Every case is sent twice to the same app: once as ``/sign`` (the direct path) and once under
a ``root_path``, which the direct path leaves to FastAPI's router, which strips the root and
calls the same endpoint as a FastAPI route. Status, headers and body must be the same, byte
for byte, for every refusal; a success must have the same form.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from ostiary.authority.authority import Authority
from ostiary.provisioners import CAIdentity
from ostiary.server.app import DirectRoute, create_app
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.context import ServerContext
from ostiary.server.models import CertificateAnswer
from ostiary.server.problems import PROBLEM_JSON
from ostiary.server.routes import enroll
from tests.server.conftest import Provisioners, make_csr

ROOT = "/behind-a-prefix"


@dataclass
class Setup:
    app: FastAPI
    context: ServerContext
    provisioners: Provisioners

    @property
    def ca(self) -> CAIdentity:
        return self.context.ca

    def sign_token(self, subject: str = "alice@example.com", *, now: datetime | None = None) -> str:
        return self.provisioners.ops.mint_sign_token(
            self.provisioners.ops_key, subject, ca=self.ca, now=now or datetime.now(UTC)
        )


@dataclass
class Call:
    """One request, sent the same way on both paths; ``before`` is sent first, once."""

    method: str = "POST"
    json: Any = None
    content: bytes | Callable[[], AsyncIterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    before: Call | None = None

    async def send(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        content = self.content() if callable(self.content) else self.content
        return await client.request(
            self.method, path, json=self.json, content=content, headers=self.headers
        )


@pytest.fixture
def setup(authority: Authority, provisioners: Provisioners) -> Setup:
    context = ServerContext.for_authority(authority)
    return Setup(create_app(context), context, provisioners)


def both_paths(
    app: FastAPI, call: Call, routed: Call | None = None
) -> tuple[httpx.Response, httpx.Response]:
    """``call`` to ``/sign`` (served directly), then ``routed`` (default: ``call`` again)
    under :data:`ROOT` (through the router)."""

    async def run() -> tuple[httpx.Response, httpx.Response]:
        answers = []
        for root in ("", ROOT):
            transport = httpx.ASGITransport(app=app, root_path=root, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="https://ca.test") as client:
                if call.before is not None and not root:
                    first = await call.before.send(client, "/sign")
                    assert first.status_code == 201, first.text
                sent = routed if root and routed is not None else call
                answers.append(await sent.send(client, f"{root}/sign"))
        return answers[0], answers[1]

    return asyncio.run(run())


def _json(content_type: str, body: bytes) -> Call:
    return Call(content=body, headers={"content-type": content_type})


def _signed(
    setup: Setup, *, csr: str | None = None, token: str | None = None, **extra: Any
) -> Call:
    body = {
        "csr": csr if csr is not None else make_csr()[0],
        "token": token if token is not None else setup.sign_token(),
        **extra,
    }
    return Call(json=body)


def _forged(token: str) -> str:
    header, claims, signature = token.split(".")
    decoded = bytearray(base64.urlsafe_b64decode(signature + "=="))
    decoded[3] ^= 0xFF
    return ".".join([header, claims, base64.urlsafe_b64encode(bytes(decoded)).decode().rstrip("=")])


async def _huge() -> AsyncIterator[bytes]:
    for _ in range(MAX_BODY_SIZE // 4096 + 2):
        yield b" " * 4096


def _replayed(setup: Setup) -> Call:
    once = _signed(setup)
    return replace(once, before=once)


REFUSALS: list[Any] = [
    pytest.param(lambda s: _json("application/json", b"{not json"), 400, id="fail/garbage"),
    pytest.param(lambda s: _json("application/json", b""), 400, id="fail/empty"),
    pytest.param(lambda s: _json("application/json", b"[1, 2]"), 400, id="fail/not-an-object"),
    pytest.param(lambda s: _json("application/json", b"\xff\xfe"), 400, id="fail/not-utf8"),
    pytest.param(lambda s: _json("text/plain", b"{}"), 415, id="fail/wrong-media-type"),
    pytest.param(lambda s: Call(content=b"{}"), 415, id="fail/no-media-type"),
    pytest.param(
        lambda s: Call(content=_huge, headers={"content-type": "application/json"}),
        413,
        id="fail/too-large-streamed",
    ),
    pytest.param(
        lambda s: _json("application/json", b" " * (MAX_BODY_SIZE + 1)),
        413,
        id="fail/too-large-declared",
    ),
    pytest.param(lambda s: Call(json={"csr": make_csr()[0]}), 400, id="fail/no-token"),
    pytest.param(lambda s: _signed(s, profile="server"), 400, id="fail/unknown-member"),
    pytest.param(lambda s: _signed(s, csr="not a CSR"), 400, id="fail/bad-csr"),
    pytest.param(lambda s: _signed(s, not_after="soon"), 400, id="fail/bad-not-after"),
    pytest.param(lambda s: _signed(s, token="a.b.c"), 401, id="fail/garbage-token"),
    pytest.param(lambda s: _signed(s, token=_forged(s.sign_token())), 401, id="fail/forged"),
    pytest.param(
        lambda s: _signed(s, token=s.sign_token(now=datetime.now(UTC) - timedelta(hours=1))),
        401,
        id="fail/expired-token",
    ),
    pytest.param(
        lambda s: _signed(s, csr=make_csr("mallory@example.com", ["mallory@example.com"])[0]),
        403,
        id="fail/names-not-in-token",
    ),
    pytest.param(_replayed, 409, id="fail/replayed-token"),
]


@pytest.mark.parametrize(("case", "status"), REFUSALS)
def test_a_refusal_is_the_same_problem_on_both_paths(
    setup: Setup, case: Callable[[Setup], Call], status: int
) -> None:
    served, through_router = both_paths(setup.app, case(setup))
    assert served.status_code == status, served.text
    assert served.headers["content-type"] == PROBLEM_JSON
    assert served.headers.multi_items() == through_router.headers.multi_items()
    assert served.content == through_router.content


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        pytest.param(
            OperationalError("INSERT", None, ConnectionRefusedError("db.internal:5432")),
            503,
            "store-unavailable",
            id="fail/database-unreachable",
        ),
        pytest.param(RuntimeError("secret internal state"), 500, "internal", id="fail/a-bug"),
    ],
)
def test_a_failure_while_issuing_is_the_same_problem_on_both_paths(
    setup: Setup,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
    code: str,
) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(setup.context.authority, "issue_async", failing)
    served, through_router = both_paths(setup.app, _signed(setup), _signed(setup))
    assert served.status_code == status
    assert served.json()["type"] == f"urn:ostiary:error:{code}"
    assert served.headers.multi_items() == through_router.headers.multi_items()
    assert served.content == through_router.content
    assert "secret" not in served.text and "db.internal" not in served.text
    if status == 500:
        assert "unexpected error in POST /sign" in caplog.text


def test_a_certificate_has_the_same_answer_on_both_paths(setup: Setup) -> None:
    served, through_router = both_paths(setup.app, _signed(setup), _signed(setup))
    assert served.status_code == through_router.status_code == 201, served.text
    assert [name for name, _ in served.headers.multi_items()] == [
        name for name, _ in through_router.headers.multi_items()
    ]
    assert served.headers["content-type"] == through_router.headers["content-type"]
    answer = CertificateAnswer.model_validate_json(served.content)
    routed_answer = CertificateAnswer.model_validate_json(through_router.content)
    leaf = x509.load_pem_x509_certificate(answer.certificate.encode())
    assert answer.chain == routed_answer.chain == list(setup.context.chain_of(leaf))
    # FastAPI serializes the response model the way the endpoint does: same bytes.
    assert routed_answer.model_dump_json().encode() == through_router.content
    assert answer.model_dump_json().encode() == served.content
    assert json.loads(served.content).keys() == json.loads(through_router.content).keys()


def test_sign_is_served_ahead_of_the_router(setup: Setup) -> None:
    direct = [m for m in setup.app.user_middleware if m.cls is DirectRoute]
    assert [(m.kwargs["method"], m.kwargs["path"], m.kwargs["endpoint"]) for m in direct] == [
        ("POST", "/sign", enroll.sign)
    ]


def test_other_methods_on_sign_are_left_to_the_router(setup: Setup) -> None:
    served, _ = both_paths(setup.app, Call(method="GET"))
    assert served.status_code == 405
    assert served.headers["allow"] == "POST"
    assert served.json() == {
        "type": "urn:ostiary:error:method-not-allowed",
        "title": "Method not allowed",
        "status": 405,
        "detail": "GET is not allowed on /sign",
    }
