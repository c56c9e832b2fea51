"""Refusals from the CA, turned back into Ostiary errors, and the client's own error.

The CA answers every refusal with an RFC 7807 problem document whose ``type`` ends in the
error's stable code (``urn:ostiary:error:token-reused``). :func:`error_from_problem` builds
the same :class:`~ostiary.core.errors.OstiaryError` subclass the server raised, so a caller
catches one tree whether it runs the CA in-process or talks to it over HTTP. A code this
side does not know falls back to the base class for the HTTP status.

Added here::

    OstiaryError
    └── CAUnavailable    the CA cannot be reached, or answered 5xx: try again later
"""

from __future__ import annotations

from typing import Any

from ostiary.core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    OstiaryError,
    PolicyDenied,
    Unauthorized,
    Unavailable,
)

#: The prefix of every problem ``type`` the CA sends.
PROBLEM_TYPE_PREFIX = "urn:ostiary:error:"


class CAUnavailable(Unavailable):
    """The CA could not be reached (connection, timeout) or failed to answer (5xx)."""

    code = "ca-unavailable"


_BY_STATUS: dict[int, type[OstiaryError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: PolicyDenied,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
}


def _error_classes() -> dict[str, type[OstiaryError]]:
    """Every loaded :class:`OstiaryError` subclass by its code (the first one wins)."""
    found: dict[str, type[OstiaryError]] = {}
    pending: list[type[OstiaryError]] = [OstiaryError]
    while pending:
        cls = pending.pop(0)
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_problem(status: int, document: Any) -> OstiaryError:
    """The error a problem document (or a bare error answer) stands for.

    ``document`` is the decoded JSON body, or anything else when the body was not JSON.
    """
    problem = document if isinstance(document, dict) else {}
    type_uri = str(problem.get("type", ""))
    code = type_uri[len(PROBLEM_TYPE_PREFIX) :] if type_uri.startswith(PROBLEM_TYPE_PREFIX) else ""
    detail = str(problem.get("detail") or problem.get("title") or f"the CA answered {status}")
    cls = _error_classes().get(code) if code else None
    if cls is None:
        cls = CAUnavailable if status >= 500 else _BY_STATUS.get(status, BadRequest)
    return cls(detail, status=status, code=code or None)


def is_transient(error: OstiaryError) -> bool:
    """Whether asking again later may succeed without anything else changing."""
    return isinstance(error, Unavailable)
