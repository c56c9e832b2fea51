"""The one place where errors become HTTP responses: RFC 7807 problem details.

Every error answer of the CA server is ``application/problem+json`` (RFC 7807 section 3)::

    {"type": "urn:ostiary:error:<code>", "title": "...", "status": 403, "detail": "..."}

``code`` is the stable :attr:`ostiary.core.errors.OstiaryError.code`. The status follows the
error's branch of the tree (see :mod:`ostiary.core.errors`):

=====================  ======  =====================================================
BadRequest             400     the input is wrong (413/415 for size and media type)
Unauthorized           401     with ``WWW-Authenticate: Bearer`` (RFC 6750 section 3)
PolicyDenied           403
NotFound               404
Conflict               409
TooManyRequests        429     with ``Retry-After`` (per-address limit, full table, held feeds)
Unavailable            503     (SignerUnavailable, ...)
database unreachable   503     ``store-unavailable`` (:func:`is_store_unavailable`)
anything else          500     logged with its traceback; the answer says nothing more
=====================  ======  =====================================================

FastAPI's request validation errors become 400 ``malformed`` (without echoing the input,
which may hold a token), and Starlette's own HTTP errors (unknown path, wrong method) become
problems too. Simple structured facts an error carries (serial, name, limit) are added as
extension members (RFC 7807 section 3.2); nothing else from the exception is shown.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from ostiary.acme.errors import acme_type_of, problem_document
from ostiary.core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    OstiaryError,
    PolicyDenied,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from ostiary.core.printable import printable
from ostiary.store import database_unreachable

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:ostiary:error:"

logger = logging.getLogger("ostiary.server")


class BodyTooLarge(BadRequest):
    """The request body is larger than the endpoint accepts (HTTP 413)."""

    code = "body-too-large"

    @classmethod
    def over(cls, limit: int) -> BodyTooLarge:
        """The refusal of a body over ``limit`` bytes, the same wherever it is found."""
        return cls(f"the body is larger than {limit} bytes", limit=limit)


class UnsupportedMediaType(BadRequest):
    """The request body is not of a media type the endpoint reads (HTTP 415)."""

    code = "unsupported-media-type"


#: Most specific first: the first class the error is an instance of decides.
_STATUS: tuple[tuple[type[OstiaryError], HTTPStatus], ...] = (
    (BodyTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    (UnsupportedMediaType, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
    (BadRequest, HTTPStatus.BAD_REQUEST),
    (Unauthorized, HTTPStatus.UNAUTHORIZED),
    (PolicyDenied, HTTPStatus.FORBIDDEN),
    (NotFound, HTTPStatus.NOT_FOUND),
    (Conflict, HTTPStatus.CONFLICT),
    (TooManyRequests, HTTPStatus.TOO_MANY_REQUESTS),
    (Unavailable, HTTPStatus.SERVICE_UNAVAILABLE),
)

#: Codes for HTTP errors raised by the framework itself (routing, methods).
_FRAMEWORK_CODES = {
    HTTPStatus.BAD_REQUEST: "bad-request",
    HTTPStatus.NOT_FOUND: "not-found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method-not-allowed",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "body-too-large",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "unsupported-media-type",
    HTTPStatus.TOO_MANY_REQUESTS: "too-many-requests",
}

#: Members RFC 7807 defines; an error's data never overrides them.
_RESERVED = frozenset({"type", "title", "status", "detail", "instance"})


#: Titles that the code alone does not spell well.
_TITLES = {
    "internal": "Internal server error",
    "bad-csr": "Invalid CSR",
    "malformed": "Malformed input",
}


def title_of(code: str) -> str:
    """The problem type's title (RFC 7807 section 3.1): one per code, never per occurrence."""
    return _TITLES.get(code) or code.replace("-", " ").capitalize()


def status_for(error: OstiaryError) -> HTTPStatus:
    """The HTTP status of an Ostiary error (500 for a bare ``OstiaryError``: a bug)."""
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return HTTPStatus.INTERNAL_SERVER_ERROR


def problem_response(
    status: HTTPStatus,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title_of(code),
        "status": int(status),
        "detail": detail,
    }
    for key, value in (extra or {}).items():
        if key not in _RESERVED:
            body[key] = value
    return JSONResponse(body, status_code=int(status), headers=headers, media_type=PROBLEM_JSON)


def error_response(error: OstiaryError) -> JSONResponse:
    """The problem document of an :class:`OstiaryError`."""
    status = status_for(error)
    if status is HTTPStatus.INTERNAL_SERVER_ERROR:
        logger.error("error without an HTTP mapping: %s (%s)", type(error).__name__, error.code)
        return _internal_error()
    headers = {"WWW-Authenticate": "Bearer"} if status is HTTPStatus.UNAUTHORIZED else None
    wait = retry_after_of(error)
    if wait is not None:
        headers = {"Retry-After": str(wait)}
    return problem_response(
        status, error.code, error.detail, headers=headers, extra=_simple_facts(error.data)
    )


def retry_after_of(error: OstiaryError) -> int | None:
    """The seconds after which asking again may work (``Retry-After``), for a refusal that
    is temporary: over a limit, or something unavailable that said when to try again.
    """
    if isinstance(error, TooManyRequests):
        return error.retry_after
    wait = error.data.get("retry_after")
    if isinstance(error, Unavailable) and isinstance(wait, int) and wait >= 1:
        return wait
    return None


def acme_problem_response(
    error: OstiaryError, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The RFC 8555 problem document (``urn:ietf:params:acme:error:*``) of an error met on
    an ACME route; an error with no ACME meaning is ``serverInternal`` (logged).
    """
    answer_headers = dict(headers or {})
    found = acme_type_of(error)
    if found is None:
        logger.error("ACME error without a mapping: %s (%s)", type(error).__name__, error.code)
        found = ("serverInternal", status_for(error))
        detail = "the CA server failed; the error was logged"
    else:
        detail = error.detail
    acme_type, status = found
    wait = retry_after_of(error)
    if wait is not None:
        answer_headers["Retry-After"] = str(wait)
    body = problem_document(acme_type, detail, status)
    for key, value in _simple_facts(error.data).items():
        if key == "location" and isinstance(value, str):
            answer_headers["Location"] = value
        elif key not in _RESERVED:
            body[key] = value
    return JSONResponse(
        body, status_code=int(status), headers=answer_headers, media_type=PROBLEM_JSON
    )


def is_store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (503, try again), not a bug
    (:func:`ostiary.store.database_unreachable`).
    """
    return database_unreachable(exc)


def store_unavailable_response() -> JSONResponse:
    """The 503 ``store-unavailable`` problem: nothing of the driver's message is shown."""
    return problem_response(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "store-unavailable",
        "the CA's database cannot be reached right now; try again later",
        headers={"Retry-After": "5"},
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error answer of ``app`` a problem document."""
    app.add_exception_handler(OstiaryError, _ostiary_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _store_unavailable)
    app.add_exception_handler(PoolTimeout, _store_unavailable)
    app.add_exception_handler(DBAPIError, _store_unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _ostiary_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, OstiaryError):  # pragma: no cover - registered for OstiaryError
        return await _unexpected_error(request, exc)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    detail = "; ".join(parts) or "the request is not valid"
    return problem_response(HTTPStatus.BAD_REQUEST, "malformed", detail)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for it
        return await _unexpected_error(request, exc)
    try:
        status = HTTPStatus(exc.status_code)
    except ValueError:
        status = HTTPStatus.BAD_REQUEST
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return _internal_error()
    code = _FRAMEWORK_CODES.get(status, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else status.description
    if status is HTTPStatus.NOT_FOUND:
        detail = f"nothing at {request.url.path}"
    elif status is HTTPStatus.METHOD_NOT_ALLOWED:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(status, code, detail, headers=dict(exc.headers or {}))


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_store_unavailable(exc):
        return await _unexpected_error(request, exc)
    # The driver's message may name the database host: it goes to the log only.
    logger.warning(  # the path is the client's: control characters made visible
        "the database cannot be reached in %s %s: %s",
        request.method,
        printable(request.url.path),
        exc,
    )
    return store_unavailable_response()


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    path = printable(request.url.path)
    logger.error("unexpected error in %s %s", request.method, path, exc_info=exc)
    return _internal_error()


def _internal_error() -> JSONResponse:
    return problem_response(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "internal",
        "the CA server failed unexpectedly; the error was logged",
    )


def _simple_facts(data: dict[str, Any]) -> dict[str, Any]:
    """The error's scalar facts, safe to show (errors never carry secrets in ``data``)."""
    return {
        key: value
        for key, value in data.items()
        if isinstance(value, str | int | float | bool) and not isinstance(value, bytes)
    }


__all__ = [
    "PROBLEM_JSON",
    "TYPE_PREFIX",
    "BodyTooLarge",
    "UnsupportedMediaType",
    "acme_problem_response",
    "error_response",
    "install_problem_handlers",
    "is_store_unavailable",
    "problem_response",
    "retry_after_of",
    "status_for",
    "store_unavailable_response",
    "title_of",
]
