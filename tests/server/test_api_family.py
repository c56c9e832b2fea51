"""A :class:`DirectFamily` (the ACME resources on the server) is answered by the protocol
exactly as the app answers it through uvicorn.

Two uvicorn servers on loopback serve one small FastAPI app with a family of templated
routes (``/fam/{name}/...``, endpoints that take the request and give a response, as the
ACME routes do): one with the family given to :class:`ApiHttpProtocol`, one without. The
same raw requests go to both; status, headers (but ``date``) and body must be the same, and
the endpoint must have seen the same request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ostiary.core.errors import Conflict
from ostiary.server.api_http import ApiHttpProtocol, DirectFamily
from ostiary.server.direct_routes import DirectTemplates
from ostiary.server.problems import install_problem_handlers
from tests.server.test_api_http import Response as Answer
from tests.server.test_api_http import exchange

router = APIRouter(prefix="/fam/{name}")
seen: list[dict[str, Any]] = []


async def _seen(request: Request, name: str) -> dict[str, Any]:
    body = await request.body()
    request_seen = {
        "name": name,
        "url": str(request.url),
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "body": body.decode(),
        "content-type": request.headers.get("content-type"),
    }
    seen.append(request_seen)
    return request_seen


@router.get("/thing")
async def thing(name: str, request: Request) -> Response:
    return JSONResponse(await _seen(request, name), headers={"Replay-Nonce": "abc"})


@router.head("/thing")
async def thing_head(name: str, request: Request) -> Response:
    await _seen(request, name)
    return Response(status_code=200, headers={"Replay-Nonce": "abc"})


@router.get("/empty")
async def empty(name: str, request: Request) -> Response:
    await _seen(request, name)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@router.post("/item/{item}")
async def item(name: str, item: str, request: Request, cursor: str | None = None) -> Response:
    answer = await _seen(request, name)
    answer.update(item=item, cursor=cursor)
    return JSONResponse(answer, status_code=201, headers={"Location": f"/fam/{name}/{item}"})


@router.post("/conflict")
async def conflict(name: str, request: Request) -> Response:
    raise Conflict("already there")


@router.post("/broken")
async def broken(name: str, request: Request) -> Response:
    raise RuntimeError("a bug")


@router.post("/bad-header")
async def bad_header(name: str, request: Request) -> Response:
    return Response(headers={"X-Split": "a\r\nInjected: yes"})


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    app.add_middleware(DirectTemplates, prefix="/fam/", routes=_routes())
    return app


def _routes() -> list[APIRoute]:
    return [route for route in router.routes if isinstance(route, APIRoute)]


@contextmanager
def _serve(*, family: bool) -> Iterator[int]:
    app = _app()
    templates = DirectTemplates(app, prefix="/fam/", routes=_routes())
    protocol = ApiHttpProtocol.serving({}, family=DirectFamily(app, templates) if family else None)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    config = uvicorn.Config(
        app,
        http=protocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        forwarded_allow_ips="127.0.0.1",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    with _serve(family=True) as direct, _serve(family=False) as through_app:
        yield direct, through_app


def _post(path: bytes, body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"POST %b HTTP/1.1\r\nHost: ca.example:8443\r\nContent-Type: application/jose+json\r\n"
        b"%bContent-Length: %d\r\n\r\n%b" % (path, extra, len(body), body)
    )


FORWARDED_FOR = b"X-Forwarded-For: 10.1.2.3\r\n"
REQUESTS = [
    pytest.param(b"GET /fam/a/thing HTTP/1.1\r\nHost: ca.example\r\n\r\n", id="ok/get"),
    pytest.param(b"HEAD /fam/a/thing HTTP/1.1\r\nHost: ca.example\r\n\r\n", id="ok/head"),
    pytest.param(b"GET /fam/a/empty HTTP/1.1\r\nHost: ca.example\r\n\r\n", id="ok/204"),
    pytest.param(_post(b"/fam/a/item/x%2Fy?cursor=2", b'{"p": 1}'), id="ok/escaped-and-query"),
    pytest.param(
        _post(
            b"/fam/a/item/1",
            b"{}",
            extra=b"X-Forwarded-Proto: http\r\nX-Forwarded-For: 10.1.2.3\r\n",
        ),
        id="ok/behind-a-trusted-proxy",
    ),
    pytest.param(b"GET /fam/a/thing HTTP/1.0\r\nHost: ca.example\r\n\r\n", id="ok/http-1.0"),
    pytest.param(
        b"GET /fam/a/thing HTTP/1.1\r\nHost: ca.example\r\nConnection: close\r\n\r\n",
        id="ok/connection-close",
    ),
    pytest.param(_post(b"/fam/a/conflict", b"{}"), id="fail/handled-error"),
    pytest.param(_post(b"/fam/a/broken", b"{}"), id="fail/unhandled-error"),
    pytest.param(b"GET /fam/a/nothing HTTP/1.1\r\nHost: ca.example\r\n\r\n", id="fail/no-route"),
    pytest.param(b"PUT /fam/a/thing HTTP/1.1\r\nHost: ca.example\r\n\r\n", id="fail/method"),
]


def _without_date(answer: Answer) -> Answer:
    return Answer(
        answer.status, {k: v for k, v in answer.headers.items() if k != "date"}, answer.body
    )


@pytest.mark.parametrize("request_bytes", REQUESTS)
def test_a_family_request_is_answered_as_the_app_answers_it(
    ports: tuple[int, int], request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    direct, through_app = ports
    seen.clear()
    answers = [exchange(port, request_bytes)[0] for port in (direct, through_app)]
    assert _without_date(answers[0]) == _without_date(answers[1])
    assert "date" in answers[0].headers
    assert len(seen) in (0, 2)
    if seen:
        assert seen[0] == seen[1]


def test_a_keep_alive_connection_serves_many_family_requests(ports: tuple[int, int]) -> None:
    direct, _ = ports
    one = _post(b"/fam/a/item/1", b"{}")
    answers = exchange(direct, one * 5, answers=5)
    assert [a.status for a in answers] == [201] * 5


def test_a_header_that_would_split_the_head_is_never_written(ports: tuple[int, int]) -> None:
    direct, _ = ports
    (answer,) = exchange(direct, _post(b"/fam/a/bad-header", b"{}"))
    assert answer.status == 500
    assert "injected" not in answer.headers
