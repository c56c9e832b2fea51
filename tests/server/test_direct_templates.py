"""A family of templated routes served ahead of FastAPI (``DirectTemplates``, the ACME routes).

Each case is sent twice to one app: as it is (the direct path) and under a ``root_path``,
which the direct path leaves to FastAPI's router, which calls the same endpoint. The answers
must be the same; a path no template matches must get the router's own answer.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ostiary.core.errors import NotFound
from ostiary.server.app import ACME_PREFIX, create_app
from ostiary.server.context import ServerContext
from ostiary.server.direct_routes import DirectTemplates
from ostiary.server.problems import install_problem_handlers
from ostiary.server.routes import acme as acme_routes

ROOT = "/behind-a-prefix"

router = APIRouter(prefix="/acme/{provisioner}")


@router.get("/directory")
async def directory(provisioner: str, request: Request) -> Response:
    return JSONResponse({"provisioner": provisioner, "url": str(request.url)})


@router.post("/order/{order_id}")
async def order(provisioner: str, order_id: str, request: Request) -> Response:
    return JSONResponse({"order": order_id, "body": (await request.body()).decode()}, 201)


@router.post("/order/{order_id}/finalize")
async def finalize(provisioner: str, order_id: str, request: Request) -> Response:
    raise NotFound(f"no order {order_id}")


@router.post("/orders/{account_id}")
async def orders(
    provisioner: str, account_id: str, request: Request, cursor: str | None = None
) -> Response:
    return JSONResponse({"account": account_id, "cursor": cursor}, headers={"X-Seen": "1"})


def make_app(*, without_router: bool = False) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    app.add_middleware(DirectTemplates, prefix=ACME_PREFIX, routes=routes)
    if without_router:
        app.router.routes.clear()
    return app


def send(app: FastAPI, method: str, path: str, root: str, **kw: object) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path=root, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="https://ca.test") as client:
            return await client.request(method, f"{root}{path}", **kw)  # type: ignore[arg-type]

    return asyncio.run(run())


CASES = [
    pytest.param("GET", "/acme/a%20b/directory", {}, 200, id="ok/directory-decoded-name"),
    pytest.param("POST", "/acme/p/order/o1", {"content": b"x"}, 201, id="ok/order"),
    pytest.param("POST", "/acme/p/orders/acc?cursor=c9", {}, 200, id="ok/query-parameter"),
    pytest.param("POST", "/acme/p/orders/acc", {}, 200, id="ok/query-parameter-absent"),
    pytest.param("POST", "/acme/p/order/o1/finalize", {}, 404, id="fail/problem"),
    pytest.param("POST", "/acme/p/order/o1/other", {}, 404, id="fail/unknown-leaf"),
    pytest.param("POST", "/acme/p/order//finalize", {}, 404, id="fail/empty-segment"),
    pytest.param("GET", "/acme/p/order/o1", {}, 405, id="fail/other-method"),
    pytest.param("POST", "/acme/p", {}, 404, id="fail/too-short"),
]


@pytest.mark.parametrize(("method", "path", "kw", "status"), CASES)
def test_an_answer_is_the_same_on_both_paths(
    method: str, path: str, kw: dict[str, object], status: int
) -> None:
    app = make_app()
    served, routed = (send(app, method, path, root, **kw) for root in ("", ROOT))
    assert served.status_code == routed.status_code == status, served.text
    assert served.headers["content-type"] == routed.headers["content-type"]
    assert served.headers.get("x-seen") == routed.headers.get("x-seen")
    body = served.json()
    if "detail" in body:  # the router's 404 names the path it was given, root and all
        assert routed.json()["detail"] == body["detail"].replace(" /", f" {ROOT}/")
        body.pop("detail")
        routed_body = routed.json()
        routed_body.pop("detail")
        assert routed_body == body
    elif "url" in body:  # the URL as the endpoint saw it: its root differs, nothing else
        assert routed.json()["url"] == body["url"].replace("ca.test/", f"ca.test{ROOT}/")
        body = {k: v for k, v in body.items() if k != "url"}
        assert {k: v for k, v in routed.json().items() if k != "url"} == body
    else:
        assert routed.json() == body


def test_the_endpoints_are_called_without_the_router() -> None:
    app = make_app(without_router=True)
    answer = send(app, "POST", "/acme/p/orders/acc?cursor=2", "")
    assert answer.json() == {"account": "acc", "cursor": "2"}
    assert send(app, "POST", "/acme/p/order/o1/finalize", "").json()["detail"] == "no order o1"


def test_every_acme_route_is_served_ahead_of_the_router(authority: object) -> None:
    app = create_app(ServerContext.for_authority(authority))  # type: ignore[arg-type]
    served = next(m for m in app.user_middleware if m.cls is DirectTemplates)
    paths = {(tuple(sorted(r.methods)), r.path) for r in served.kwargs["routes"]}
    documented = {
        (tuple(sorted(r.methods)), r.path)  # type: ignore[attr-defined]
        for r in acme_routes.router.routes
    }
    assert paths == documented
    assert len(paths) == 15
    assert all(r.path in app.openapi()["paths"] for r in served.kwargs["routes"])
