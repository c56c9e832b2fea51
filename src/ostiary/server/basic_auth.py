"""HTTP Basic credentials (RFC 7617) for the device and MDM routes: EST's enrollment codes
(RFC 7030 section 3.2.3) and the MDM secret of a dynamic SCEP provisioner.

Only the password is a secret (a one-time code, an MDM secret); the user name is not
checked. A missing or malformed header and a wrong secret are all a 401 problem document
with ``WWW-Authenticate: Basic realm=...`` (a client that sent no credentials learns the
scheme to use). The secret itself is never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import Request
from fastapi.responses import JSONResponse

from ostiary.core.errors import Unauthorized
from ostiary.server.credentials import MAX_AUTHORIZATION
from ostiary.server.problems import problem_response, status_for


def basic_password(request: Request) -> str | None:
    """The password of the request's Basic credentials; None without ``Authorization``.

    :class:`Unauthorized` for another scheme or a header that does not decode.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or len(encoded) > MAX_AUTHORIZATION:
        raise Unauthorized("the Authorization header must be 'Basic <base64 user:password>'")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthorized("the Basic credentials are not base64 of 'user:password'") from None
    _, colon, password = decoded.partition(":")
    if not colon or not password:
        raise Unauthorized("the Basic credentials carry no password")
    return password


def basic_challenge(error: Unauthorized, realm: str) -> JSONResponse:
    """The 401 problem document of ``error``, asking for Basic credentials for ``realm``."""
    return problem_response(
        status_for(error),
        error.code,
        error.detail,
        headers={"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'},
    )


__all__ = ["basic_challenge", "basic_password"]
