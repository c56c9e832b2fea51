"""Routes whose endpoints are called ahead of FastAPI: one path, or a family of templates.

FastAPI matches a request against every route of the app in turn, then solves the
endpoint's dependencies and validates its parameters; Starlette wraps the call in its
exception middleware and request objects. For a hot endpoint that does its own reading and
answering (it takes the bare :class:`~fastapi.Request` and returns a finished
:class:`~fastapi.Response`) that is more CPU than the work. :class:`DirectTemplates` serves
every route of a router's family (the ACME resources, ``/acme/{provisioner}/...``) by
splitting the path once and looking the template up, and calls the same endpoint FastAPI
would, with the same path parameters and the optional query parameters it declares. The
FastAPI routes stay: they document the endpoints (OpenAPI), and answer whatever this does
not match (another method, a ``root_path``, a path FastAPI would refuse).

Errors get the answers the app would give: an exception the app has a handler for
(:func:`~ostiary.server.problems.install_problem_handlers`) is answered by that handler,
as Starlette's ``ExceptionMiddleware`` would; any other one propagates to
``ServerErrorMiddleware`` (500, logged). The matched route is put in the scope, as
Starlette's router does, so that :class:`~ostiary.server.metrics.RouteTiming` times the
request under its template.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Template:
    route: APIRoute
    #: The path's segments after the prefix: a literal, or None for a parameter.
    literals: tuple[str | None, ...]
    #: The parameters' names, in the order of the ``None`` segments.
    names: tuple[str, ...]
    #: Query parameters the endpoint takes (optional strings).
    query: tuple[str, ...]

    @classmethod
    def of(cls, route: APIRoute, prefix: str) -> _Template:
        segments = route.path_format.removeprefix(prefix).split("/")
        literals = tuple(None if s.startswith("{") else s for s in segments)
        names = tuple(s[1:-1] for s in segments if s.startswith("{"))
        taken = {*names, "request"}
        query = tuple(p for p in inspect.signature(route.endpoint).parameters if p not in taken)
        return cls(route, literals, names, query)

    def match(self, segments: list[str]) -> dict[str, str] | None:
        values: list[str] = []
        for literal, segment in zip(self.literals, segments, strict=True):
            if literal is None:
                values.append(segment)
            elif literal != segment:
                return None
        return dict(zip(self.names, values, strict=True))


class DirectTemplates:
    """Call the endpoints of ``routes`` (all under ``prefix``) ahead of FastAPI's routing.

    ``prefix`` is a path template's fixed start ending in a slash, e.g. ``"/acme/"``; every
    route's template must start with it. A path segment is a parameter's value as it is
    (already percent-decoded, non-empty), as Starlette's ``str`` convertor takes it.
    """

    def __init__(self, app: ASGIApp, *, prefix: str, routes: Iterable[APIRoute]) -> None:
        self.app = app
        self.prefix = prefix
        self._templates: dict[tuple[str, int], list[_Template]] = {}
        for route in routes:
            template = _Template.of(route, prefix)
            for method in route.methods or ():
                key = (method, len(template.literals))
                self._templates.setdefault(key, []).append(template)

    def find(self, method: str, path: str) -> DirectMatch | None:
        """The route of the family serving ``method`` on ``path`` (percent-decoded, without
        a ``root_path``), with its path parameters; None if none does.
        """
        if not path.startswith(self.prefix):
            return None
        segments = path[len(self.prefix) :].split("/")
        if "" in segments:
            return None
        for template in self._templates.get((method, len(segments)), ()):
            params = template.match(segments)
            if params is not None:
                return DirectMatch(template, params)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        found = self.find(scope["method"], path)
        if found is None:
            await self.app(scope, receive, send)
            return
        await found(scope, receive, send)


@dataclass(frozen=True, slots=True)
class DirectMatch:
    """A request's route in a :class:`DirectTemplates` family and its path parameters;
    called as an ASGI app, it answers the request through the route's endpoint.
    """

    template: _Template
    params: dict[str, str]

    @property
    def route(self) -> APIRoute:
        return self.template.route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.template.route
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = self.params
        request = Request(scope, receive, send)
        arguments: dict[str, Any] = dict(self.params)
        if self.template.query:
            query = request.query_params
            arguments.update({name: query.get(name) for name in self.template.query})
        await answer_directly(request, route.endpoint(request=request, **arguments), send)


async def answer_directly(request: Request, answering: Awaitable[Response], send: Send) -> None:
    """Send the response ``answering`` gives; an exception the app has a handler for is
    answered by that handler, as Starlette's ``ExceptionMiddleware`` would, any other one
    propagates (to ``ServerErrorMiddleware``).
    """
    try:
        response = await answering
    except Exception as exc:
        handler = exception_handler_for(request.app.exception_handlers, exc)
        if handler is None:
            raise
        answer = handler(request, exc)
        response = await answer if inspect.isawaitable(answer) else answer
    await response(request.scope, request.receive, send)


def exception_handler_for(
    handlers: Mapping[Any, Callable[[Request, Exception], Any]], exc: Exception
) -> Callable[[Request, Exception], Any] | None:
    """The handler ``ExceptionMiddleware`` would call for ``exc`` (the most specific class),
    or None for those left to ``ServerErrorMiddleware``.
    """
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


__all__ = ["DirectMatch", "DirectTemplates", "answer_directly", "exception_handler_for"]
