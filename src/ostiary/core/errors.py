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
    │   ├── LifetimeNotAllowed   outside min/max, or past the issuer's not_after
    │   └── KeyCompromised       the key was reported compromised: never certified again
    ├── Unauthorized             the credential is missing or does not prove anything
    │   ├── WrongPassword        a key file's password is wrong
    │   └── InvalidCertificate   a certificate that does not validate (chain, time, usage)
    │       └── RevokedCertificate
    ├── NotFound                 no such certificate, provisioner, CA folder, ...
    ├── Conflict                 the state says no: already revoked, token already used, exists
    │   ├── AlreadyRevoked
    │   ├── TokenReused
    │   └── Superseded           the certificate was renewed already: renew the newest one
    └── Unavailable              cannot be done right now: try again later
        ├── SignerUnavailable    the CA key cannot be used right now (token missing, ...)
        └── TooManyRequests      over a limit on how often anyone may ask (retry_after)
"""

from __future__ import annotations

import math
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


class KeyCompromised(PolicyDenied):
    """A certificate with this key was revoked for keyCompromise: no new certificate for it."""

    code = "key-compromised"


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


class Superseded(Conflict):
    """The certificate already has a successor: only the newest of a lineage renews."""

    code = "superseded"


class Unavailable(OstiaryError):
    code = "unavailable"


class SignerUnavailable(Unavailable):
    code = "signer-unavailable"


class AuditUnavailable(Unavailable):
    """The audit log could not be written, so what it would record was not done (fail
    closed); ``retry_after`` seconds later it may work again.
    """

    code = "audit-unavailable"


class TooManyRequests(Unavailable):
    """Over a limit on how often anyone may ask (per address, or a full table kept for
    anonymous callers): asking again after ``retry_after`` seconds may succeed.
    """

    code = "too-many-requests"

    @classmethod
    def wait(cls, detail: str, seconds: float) -> TooManyRequests:
        """The refusal, with the whole seconds to wait before asking again (at least 1)."""
        return cls(detail, retry_after=max(1, math.ceil(seconds)))

    @property
    def retry_after(self) -> int:
        value = self.data.get("retry_after")
        return value if isinstance(value, int) and value >= 1 else 1


__all__ = [
    "AlreadyRevoked",
    "AuditUnavailable",
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
