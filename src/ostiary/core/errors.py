"""Errors raised by Ostiary, grouped by what the caller can do about them.

Every error carries the data that explains it and a message that states the rule that was
broken. Exactly one module (``ostiary.server.problems``) turns these into HTTP responses and
one place in the CLI turns them into a single line on stderr; ``core`` never knows a status
code.

The tree::

    OstiaryError
    ├── BadRequest               the input itself is wrong: fix it and ask again
    │   ├── MalformedInput       not parseable (garbage PEM/DER, bad encoding)
    │   ├── InvalidCSR           a CSR that parses but is unusable (bad signature, ...)
    │   ├── WeakKey              a key type or size we refuse
    │   └── InvalidName          a malformed DNS name, e-mail, URI or IP address
    ├── PolicyDenied             well-formed, but the rules do not allow it
    │   ├── NameNotAuthorized    a name outside what the authorization grants
    │   └── LifetimeNotAllowed   outside min/max, or past the issuer's not_after
    ├── Unauthorized             the credential is missing or does not prove anything
    │   ├── WrongPassword        a key file's password is wrong
    │   └── InvalidCertificate   a certificate that does not validate (chain, time, usage)
    │       └── RevokedCertificate
    ├── NotFound                 no such certificate, provisioner, CA folder, ...
    ├── Conflict                 the state says no: already revoked, token already used, exists
    │   ├── AlreadyRevoked
    │   └── TokenReused
    └── Unavailable              cannot be done right now: try again later
        └── SignerUnavailable    the CA key cannot be used right now (token missing, ...)
"""

from __future__ import annotations

from typing import Any


class OstiaryError(Exception):
    """Root of every error Ostiary raises on purpose.

    ``detail`` is safe to show to the requester: it never contains a key, password or token.
    ``data`` holds the structured facts (serial, name, limit) for logs and problem documents.
    """

    #: A short, stable identifier used in problem documents (``type`` URI suffix).
    code: str = "error"

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data: dict[str, Any] = data

    def __str__(self) -> str:
        return self.detail


class BadRequest(OstiaryError):
    code = "bad-request"


class MalformedInput(BadRequest):
    code = "malformed"


class InvalidCSR(BadRequest):
    code = "bad-csr"


class WeakKey(BadRequest):
    code = "bad-public-key"


class InvalidName(BadRequest):
    code = "invalid-name"


class PolicyDenied(OstiaryError):
    code = "policy-denied"


class NameNotAuthorized(PolicyDenied):
    code = "name-not-authorized"


class LifetimeNotAllowed(PolicyDenied):
    code = "lifetime-not-allowed"


class Unauthorized(OstiaryError):
    code = "unauthorized"


class WrongPassword(Unauthorized):
    code = "wrong-password"


class InvalidCertificate(Unauthorized):
    code = "bad-certificate"


class RevokedCertificate(InvalidCertificate):
    code = "certificate-revoked"


class NotFound(OstiaryError):
    code = "not-found"


class Conflict(OstiaryError):
    code = "conflict"


class AlreadyRevoked(Conflict):
    code = "already-revoked"


class TokenReused(Conflict):
    code = "token-reused"


class Unavailable(OstiaryError):
    code = "unavailable"


class SignerUnavailable(Unavailable):
    code = "signer-unavailable"


class TooManyRequests(Unavailable):
    """Too many requests of this kind at once from one client; it may try again shortly."""

    code = "too-many-requests"


__all__ = [
    "AlreadyRevoked",
    "BadRequest",
    "Conflict",
    "InvalidCSR",
    "InvalidCertificate",
    "InvalidName",
    "LifetimeNotAllowed",
    "MalformedInput",
    "NameNotAuthorized",
    "NotFound",
    "OstiaryError",
    "PolicyDenied",
    "RevokedCertificate",
    "SignerUnavailable",
    "TokenReused",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "WeakKey",
    "WrongPassword",
]
