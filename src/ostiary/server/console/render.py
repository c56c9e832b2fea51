"""Jinja2 templates (package data under ``templates/``), the stylesheet, and error pages.

Autoescaping is on for every template; nothing secret is ever passed to one (no keys, no
tokens, no one-time codes: only their existence).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

from ostiary.core.errors import NotFound, OstiaryError
from ostiary.server.console.sessions import sign_in_providers
from ostiary.server.context import server_context
from ostiary.server.problems import retry_after_of, status_for, title_of

_STATIC = {"console.css": "text/css; charset=utf-8"}


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("ostiary.server.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(request: Request, template: str, *, status_code: int = 200, **values: Any) -> Response:
    html = environment().get_template(template).render(path=request.url.path, **values)
    return HTMLResponse(html, status_code=status_code)


def render_error(request: Request, error: OstiaryError) -> Response:
    """The error page; a temporary refusal (the audit log cannot be written) says so and
    when to try again (Retry-After), other server errors only that something went wrong.
    """
    status = int(status_for(error))
    wait = retry_after_of(error)
    if status >= 500 and wait is None:
        detail, title = "Something went wrong on the server.", "Server error"
    else:
        detail, title = error.detail, title_of(error.code)
    page = render(
        request,
        "error.html",
        status_code=status,
        officer=None,
        status=status,
        title=title,
        detail=detail,
        sign_in=_sign_in_providers(request) if status == 401 else [],
        # An OpenID sign-in refused for not being an admin: the fix is the provisioner's
        # --admins, not the officer role (which binds certificates).
        admins_of=error.data.get("admins_of") if status == 403 else None,
        signed_in_as=error.data.get("signed_in_as"),
    )
    if wait is not None:
        page.headers["Retry-After"] = str(wait)
    return page


def _sign_in_providers(request: Request) -> list[str]:
    """The OpenID providers a visitor may sign in with (none if they cannot be listed)."""
    try:
        return sign_in_providers(server_context(request).authority.store)
    except Exception:  # an error page must render even when the store does not answer
        return []


def static_file(name: str) -> Response:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise NotFound("no such file", name=name[:64])
    body = files("ostiary.server.console").joinpath("static", name).read_bytes()
    response = Response(body, media_type=media_type)
    return response
