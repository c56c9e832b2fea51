"""The FastAPI application of the CA server.

:func:`create_app` builds one app over an Authority (or a prepared
:class:`~ostiary.server.context.ServerContext`):
the full API for the HTTPS listener, or (``public_only=True``) just what relying parties
fetch over plain HTTP (CA certificates, CRLs, OCSP, health), with no OpenAPI document there.
Every error becomes a problem document (:mod:`ostiary.server.problems`); a request body
larger than :data:`~ostiary.server.body.MAX_BODY_SIZE` is refused (413) by
:class:`BodyLimit`, for every route: before routing when its length is declared, else as
soon as the bytes streamed pass the cap.

``POST /sign``, the issuance hot path, is served by :class:`DirectRoute`: its endpoint is
called ahead of FastAPI's routing and request handling, which cost more CPU per request
than the token check (docs/BENCHMARKS.md); the answers, errors included, are the same. On
the HTTPS listener the protocol answers it before it reaches the app at all
(:func:`direct_endpoints`, :mod:`ostiary.server.api_http`); :class:`DirectRoute` serves
what reaches the app (a request pipelined behind another, an app called in-process).
The ACME resources (``/acme/{provisioner}/...``, a POST each per protocol step) are served
the same way by :class:`~ostiary.server.direct_routes.DirectTemplates`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ostiary.authority.authority import Authority
from ostiary.server import console
from ostiary.server.api_http import DirectEndpoint, DirectEndpoints, DirectFamily
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.context import ServerContext
from ostiary.server.direct_routes import DirectTemplates, answer_directly
from ostiary.server.metrics import RouteTiming
from ostiary.server.openapi import document_problems, hoist_definitions
from ostiary.server.problems import BodyTooLarge, error_response, install_problem_handlers
from ostiary.server.routes import acme as acme_routes
from ostiary.server.routes import admin, enroll, publish
from ostiary.server.routes import attest as attest_routes
from ostiary.server.routes import est as est_routes
from ostiary.server.routes import oidc as oidc_routes
from ostiary.server.routes import phones as phone_routes
from ostiary.server.routes import requests as approval_requests
from ostiary.server.routes import scep as scep_routes
from ostiary.server.routes import signing as signing_routes
from ostiary.server.routes import ssh as ssh_routes

TITLE = "Ostiary CA"


def create_app(source: Authority | ServerContext, *, public_only: bool = False) -> FastAPI:
    """The ASGI app answering from ``source``.

    Given an :class:`Authority`, the publishers are made for it
    (:meth:`ServerContext.for_authority`); the server runner passes a context so that both
    listeners share one CRL publisher and one OCSP responder.
    """
    context = source if isinstance(source, ServerContext) else ServerContext.for_authority(source)
    app = FastAPI(
        title=TITLE,
        version=version("ostiary"),
        summary="A certificate authority for client certificates (mTLS).",
        openapi_url=None if public_only else "/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ostiary = context
    metrics = context.metrics
    app.state.ostiary_limits = context.limits
    install_problem_handlers(app)
    app.include_router(publish.router)
    if not public_only:
        app.include_router(enroll.router)
        app.include_router(admin.router)
        app.include_router(oidc_routes.router)
        app.include_router(approval_requests.router)
        app.include_router(console.router)
        app.include_router(signing_routes.router)
        app.include_router(attest_routes.router)
        app.include_router(ssh_routes.router)
        app.include_router(acme_routes.router)
        app.include_router(scep_routes.router)
        app.include_router(est_routes.router)
        app.include_router(phone_routes.router)
        app.add_middleware(DirectRoute, method="POST", path="/sign", endpoint=enroll.sign)
        app.add_middleware(DirectTemplates, prefix=ACME_PREFIX, routes=_acme_routes())
        app.openapi = _resolvable_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=MAX_BODY_SIZE)
    if metrics is not None:  # outermost: refusals by BodyLimit are timed too
        app.add_middleware(RouteTiming, metrics=metrics, direct=[("POST", "/sign")])
    return app


def direct_family(app: FastAPI) -> DirectFamily:
    """The ACME resources of ``app`` (made by :func:`create_app`), which the HTTPS listener's
    protocol answers through their endpoints (:class:`~ostiary.server.api_http.DirectFamily`),
    as :class:`DirectTemplates` serves them in the app.
    """
    context: ServerContext = app.state.ostiary
    metrics = context.metrics
    return DirectFamily(
        app,
        DirectTemplates(app, prefix=ACME_PREFIX, routes=_acme_routes()),
        observe=metrics.observe_request if metrics is not None else None,
    )


def direct_endpoints(context: ServerContext) -> DirectEndpoints:
    """What the HTTPS listener's protocol answers without the app
    (:class:`~ostiary.server.api_http.ApiHttpProtocol`): ``POST /sign``, as
    :class:`DirectRoute` serves it in the app.
    """
    metrics = context.metrics
    return {
        ("POST", "/sign"): DirectEndpoint(
            functools.partial(enroll.sign_answer, context),
            status=HTTPStatus.CREATED,
            observe=metrics.direct_observer("POST", "/sign") if metrics is not None else None,
        )
    }


class BodyLimit:
    """Refuse (413) every request body over ``limit`` bytes, for every route, in one place.

    A ``Content-Length`` over the cap is refused before routing. A body sent without one
    (``Transfer-Encoding: chunked``) is counted as the app reads it: the read that passes
    the cap fails (:class:`~ostiary.server.problems.BodyTooLarge`), and whatever the app
    answers after that (FastAPI turns a failed read of a body parameter into a 400) is
    replaced by the 413 problem document. Nothing past the cap is handed to the app, so no
    route can hold more than ``limit`` bytes of a body, whatever reads it; uvicorn reads
    and drops the rest. Routes that take a body still read it through
    :func:`~ostiary.server.body.read_body`, which applies the same cap (or a smaller one).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await error_response(BodyTooLarge.over(self.limit))(scope, receive, send)
                return
        limit = self.limit
        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:
                raise BodyTooLarge.over(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge.over(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the answer is the 413 below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await error_response(BodyTooLarge.over(limit))(scope, receive, send)


class DirectRoute:
    """Call one route's endpoint for exactly ``method`` ``path``, ahead of FastAPI.

    FastAPI matches a request against every route in turn, then solves the endpoint's
    dependencies and validates and serializes its answer through the response model: for a
    hot endpoint that is more CPU than the work. ``endpoint`` takes the bare
    :class:`~fastapi.Request` and returns a finished :class:`~fastapi.Response`, and is also
    the FastAPI route of that path: the route documents it (OpenAPI) and answers every other
    method, and anything this middleware does not match (another path, a ``root_path``).

    Errors get the same answers as from the route: an exception the app has a handler for
    (:func:`~ostiary.server.problems.install_problem_handlers`) is answered by that handler,
    as Starlette's ``ExceptionMiddleware`` would; any other one propagates to
    ``ServerErrorMiddleware``, which answers 500 and logs it (the handler for ``Exception``
    is that middleware's). Outer middleware, :class:`BodyLimit` among them, still
    applies.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        method: str,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        await answer_directly(request, self.endpoint(request), send)


#: Where the ACME resources live; their routes are served by :class:`DirectTemplates`.
ACME_PREFIX = "/acme/"


def _acme_routes() -> list[APIRoute]:
    """The ACME router's own routes (their templates carry the prefix); the app's copies
    call the same endpoints.
    """
    return [route for route in acme_routes.router.routes if isinstance(route, APIRoute)]


def _resolvable_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's document with the request bodies' nested definitions hoisted and the error
    answers documented as problems, made once (:mod:`ostiary.server.openapi`).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(hoist_definitions(generate()))
        return app.openapi_schema

    return openapi


__all__ = ["TITLE", "BodyLimit", "DirectRoute", "create_app", "direct_endpoints", "direct_family"]
