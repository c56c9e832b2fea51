"""RFC 8555 section 6.7 errors: ``urn:ietf:params:acme:error:<type>``.

:class:`AcmeProblem` is raised by the ACME wire layer with its RFC 8555 type; any other
:class:`~ostiary.core.errors.OstiaryError` reaching an ACME route (a CSR the pipeline
refuses, a name outside the provisioner's patterns) is given the closest ACME type by
:func:`acme_type_of`. :mod:`ostiary.server.problems` turns both into problem documents.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from ostiary.core.errors import (
    BadRequest,
    Conflict,
    InvalidCSR,
    LifetimeNotAllowed,
    NameNotAuthorized,
    NotFound,
    OstiaryError,
    PolicyDenied,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    WeakKey,
)

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"


class AcmeProblem(BadRequest):
    """An ACME error with its RFC 8555 type (without the URN prefix) and HTTP status."""

    code = "acme"

    def __init__(
        self,
        acme_type: str,
        detail: str,
        *,
        status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        **data: Any,
    ) -> None:
        super().__init__(detail, **data)
        self.acme_type = acme_type
        self.status = status


def malformed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail)


def unauthorized(detail: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail, status=HTTPStatus.FORBIDDEN)


def not_found(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail, status=HTTPStatus.NOT_FOUND)


#: Most specific first.
_TYPES: tuple[tuple[type[OstiaryError], str, HTTPStatus], ...] = (
    (InvalidCSR, "badCSR", HTTPStatus.BAD_REQUEST),
    (WeakKey, "badPublicKey", HTTPStatus.BAD_REQUEST),
    (NameNotAuthorized, "rejectedIdentifier", HTTPStatus.BAD_REQUEST),
    (LifetimeNotAllowed, "malformed", HTTPStatus.BAD_REQUEST),
    (BadRequest, "malformed", HTTPStatus.BAD_REQUEST),
    (Unauthorized, "unauthorized", HTTPStatus.FORBIDDEN),
    (PolicyDenied, "rejectedIdentifier", HTTPStatus.FORBIDDEN),
    (NotFound, "malformed", HTTPStatus.NOT_FOUND),
    (Conflict, "malformed", HTTPStatus.CONFLICT),
    (TooManyRequests, "rateLimited", HTTPStatus.TOO_MANY_REQUESTS),
    # Temporary (the audit log or the signer cannot be reached): RFC 8555 has no type for
    # it, so serverInternal, with 503 and Retry-After telling the client to try again.
    (Unavailable, "serverInternal", HTTPStatus.SERVICE_UNAVAILABLE),
)


def acme_type_of(error: OstiaryError) -> tuple[str, HTTPStatus] | None:
    """The ACME type and status of ``error``; None for an error with no client meaning."""
    if isinstance(error, AcmeProblem):
        return error.acme_type, error.status
    for cls, acme_type, status in _TYPES:
        if isinstance(error, cls):
            return acme_type, status
    return None


def problem_document(acme_type: str, detail: str, status: HTTPStatus) -> dict[str, Any]:
    """The JSON of an ACME problem (also stored as an order's or challenge's ``error``)."""
    return {
        "type": ACME_ERROR_PREFIX + acme_type,
        "title": HTTPStatus(status).phrase,  # RFC 7807; ACME clients read type and detail
        "detail": detail,
        "status": int(status),
    }


__all__ = [
    "ACME_ERROR_PREFIX",
    "AcmeProblem",
    "acme_type_of",
    "malformed",
    "not_found",
    "problem_document",
    "unauthorized",
]
