"""The FastAPI application of the CA server.

:func:`create_app` builds one app over an Authority (or a prepared
:class:`~ostiary.server.context.ServerContext`):
the full API for the HTTPS listener, or (``public_only=True``) just what relying parties
fetch over plain HTTP (CA certificates, CRLs, OCSP, health), with no OpenAPI document there.
Every error becomes a problem document (:mod:`ostiary.server.problems`); a request whose
declared body is larger than :data:`~ostiary.server.body.MAX_BODY_SIZE` is refused before
routing (bodies sent without a length are capped while they are read).
"""

from __future__ import annotations

from http import HTTPStatus
from importlib.metadata import version

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ostiary.authority.authority import Authority
from ostiary.server import console
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.context import ServerContext
from ostiary.server.problems import install_problem_handlers, problem_response
from ostiary.server.routes import admin, enroll, publish
from ostiary.server.routes import attest as attest_routes
from ostiary.server.routes import oidc as oidc_routes
from ostiary.server.routes import requests as approval_requests
from ostiary.server.routes import signing as signing_routes

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
    app.add_middleware(DeclaredBodyLimit, limit=MAX_BODY_SIZE)
    return app


class DeclaredBodyLimit:
    """Refuse (413) a request whose ``Content-Length`` is over ``limit``, before routing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    response = problem_response(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        "body-too-large",
                        f"the body is larger than {self.limit} bytes",
                        extra={"limit": self.limit},
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


__all__ = ["TITLE", "DeclaredBodyLimit", "create_app"]
