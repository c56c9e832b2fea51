"""HTTP/1.1 answers written as bytes, for the listeners that answer without ASGI.

The plain-HTTP listener (:mod:`ostiary.server.public_http`) answers every request this way,
the HTTPS listener its hot path (:mod:`ostiary.server.api_http`): a :class:`Reply` is a
status, a body, a media type and extra headers; :func:`encode` makes the bytes, with the
fixed part of each kind of head prepared once. :func:`reply_for_error` maps an exception to
the problem document the FastAPI app's handlers (:mod:`ostiary.server.problems`) give for it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from starlette.responses import JSONResponse

from ostiary.core.errors import OstiaryError
from ostiary.core.printable import printable
from ostiary.server.problems import (
    error_response,
    is_store_unavailable,
    problem_response,
    store_unavailable_response,
)

logger = logging.getLogger("ostiary.server.http")


@dataclass(frozen=True, slots=True)
class Reply:
    """One response: status, body, media type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, response: JSONResponse) -> Reply:
        """A reply from a problem document (:mod:`ostiary.server.problems`)."""
        headers = tuple(
            (k, v)
            for k, v in response.headers.items()
            if k not in ("content-length", "content-type")
        )
        return cls(response.status_code, bytes(response.body), response.media_type, headers)


def problem(status: HTTPStatus, code: str, detail: str, **headers: str) -> Reply:
    """A problem document (RFC 9457) as a reply."""
    return Reply.of(problem_response(status, code, detail, headers=headers or None))


def reply_for_error(exc: Exception, method: str, path: str) -> Reply:
    """The answer to a request whose handling raised ``exc``, as the FastAPI app gives it.

    An :class:`OstiaryError` is its problem document; a database that cannot be reached is
    503 (the driver's message, which may name the host, goes to the log only); anything else
    is a bug: 500, logged with its traceback.
    """
    if isinstance(exc, OstiaryError):
        return Reply.of(error_response(exc))
    if is_store_unavailable(exc):
        logger.warning("the database cannot be reached in %s %s: %s", method, printable(path), exc)
        return Reply.of(store_unavailable_response())
    logger.error("unexpected error in %s %s", method, printable(path), exc_info=exc)
    return problem(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "internal",
        "the CA server failed unexpectedly; the error was logged",
    )


_REASONS = {status.value: status.phrase for status in HTTPStatus}
_date_cache: list[object] = [0, b""]


def _date() -> bytes:
    """The ``Date`` header value (RFC 9110 6.6.1), formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode("ascii")
    value = _date_cache[1]
    assert isinstance(value, bytes)
    return value


#: The fixed part of response heads (all but Date and Content-Length), by what makes it.
_HEADS: dict[tuple[int, str | None, tuple[tuple[str, str], ...], bool], tuple[bytes, bytes]] = {}
_MAX_HEADS = 1024


def encode(reply: Reply, *, head_only: bool, close: bool) -> bytes:
    """The response as bytes: status line, ``Date``, ``Content-Length`` (none on a 304),
    the reply's headers, ``Connection: close`` if ``close``, and the body unless
    ``head_only`` (a ``HEAD`` request).
    """
    key = (reply.status, reply.content_type, reply.headers, close)
    fixed = _HEADS.get(key)
    if fixed is None:
        status_line = b"HTTP/1.1 %d %s\r\nDate: " % (
            reply.status,
            _REASONS.get(reply.status, "").encode("ascii"),
        )
        lines = [f"{k}: {v}\r\n".encode("latin-1") for k, v in reply.headers]
        if reply.content_type is not None:
            lines.insert(0, f"Content-Type: {reply.content_type}\r\n".encode("latin-1"))
        if close:
            lines.append(b"Connection: close\r\n")
        fixed = (status_line, b"".join(lines) + b"\r\n")
        if len(_HEADS) < _MAX_HEADS:  # ETags vary: keep the cache bounded
            _HEADS[key] = fixed
    status_line, rest = fixed
    if reply.status == 304:
        return b"%b%b\r\n%b" % (status_line, _date(), rest)
    length = len(reply.body)
    if head_only:
        return b"%b%b\r\nContent-Length: %d\r\n%b" % (status_line, _date(), length, rest)
    return b"%b%b\r\nContent-Length: %d\r\n%b%b" % (status_line, _date(), length, rest, reply.body)


#: What uvicorn refuses in a header name or value (they would split the head).
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def encode_asgi(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    *,
    head_only: bool,
    close: bool,
) -> bytes:
    """An ASGI app's complete answer as uvicorn's httptools protocol writes it: the status
    line, ``headers`` (the server's ``date`` first, then the app's) with their names in lower
    case, ``connection: close`` if ``close`` and the app did not say it, the body unless
    ``head_only`` (a ``HEAD`` request). An answer without ``content-length`` gets one (uvicorn
    would send the same body chunked). A name or value that could split the head raises
    ``RuntimeError``, as in uvicorn.
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "").encode("ascii"))]
    length = said_close = False
    for name, value in headers:
        if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
            raise RuntimeError("Invalid HTTP header.")
        name = name.lower()
        if name == b"content-length":
            length = True
        elif name == b"connection" and b"close" in value.lower():
            said_close = True
        lines.append(b"%b: %b\r\n" % (name, value))
    if close and not said_close:
        lines.append(b"connection: close\r\n")
    if not length and status not in (204, 304) and not head_only:
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)


__all__ = ["Reply", "encode", "encode_asgi", "problem", "reply_for_error"]
