"""Who may use the console, CSRF tokens, and the headers every console page carries.

**Officers.** The HTTPS listener asks for a client certificate; the console accepts one
that this CA recorded, is not revoked and is within its validity
(:func:`~ostiary.server.credentials.check_peer_certificate`), and that the CA owner bound to
an officer (``ostiary ca officer add NAME --cert CRT``, by its fingerprint: the names in a
certificate grant nothing, see :mod:`ostiary.provisioners.officers`). No certificate: 401; a
certificate without the role: 403. Failing that, a console session opened by OpenID Connect sign-in
(:mod:`.oidc_sign_in`) names the officer; its CSRF tokens are bound to the session.

**CSRF.** Double submit, bound to the certificate: the first page sets a random nonce in a
``__Host-`` cookie (Secure, HttpOnly, SameSite=Strict); forms carry
``HMAC-SHA256(key, nonce || certificate fingerprint)``; a POST is accepted only when the
field matches the value computed from its cookie and its connection's certificate
(constant-time comparison). ``key`` is random, made once per database and shared by every
server process and replica through it (:meth:`~ostiary.store.ConsoleRepository.secret`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from fastapi import Request
from starlette.responses import Response

from ostiary.core.errors import PolicyDenied
from ostiary.provisioners.officers import officer_for_certificate
from ostiary.server.context import server_context
from ostiary.server.credentials import check_peer_certificate
from ostiary.store import ConsoleRepository

CSRF_COOKIE = "__Host-ostiary-csrf"
CSRF_FIELD = "csrf_token"
CSRF_KEY_NAME = "console.csrf"
_KEY_LOCK = threading.Lock()

#: Scripts: none. Styles: our own file. Images: our own and inline SVG (data: for none).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: HSTS (RFC 6797) for two years, Mozilla's recommendation: the console is only served over
#: HTTPS with a client certificate or a sign-in cookie, never over plain HTTP.
STRICT_TRANSPORT_SECURITY = "max-age=63072000"
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Strict-Transport-Security": STRICT_TRANSPORT_SECURITY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class CsrfRefused(PolicyDenied):
    code = "csrf-refused"


@dataclass(frozen=True)
class Officer:
    """A signed-in officer: the name bound to the certificate, and its fingerprint."""

    name: str
    fingerprint: str
    csrf_nonce: str
    new_nonce: bool
    csrf_key: bytes = field(repr=False)
    #: "certificate" (mTLS) or "oidc" (a console session; ``fingerprint`` binds to it).
    kind: str = "certificate"

    @property
    def actor(self) -> str:
        if self.kind == "oidc":
            return f"officer-oidc:{self.name}"
        return f"officer:{self.name}"

    @classmethod
    def for_session(cls, name: str, binding: str, request: Request) -> Officer:
        """An officer signed in with OpenID Connect; CSRF tokens bound to ``binding``."""
        nonce, fresh = _csrf_nonce(request)
        return cls(name, binding, nonce, fresh, csrf_key(request), kind="oidc")

    @property
    def csrf_token(self) -> str:
        return csrf_token_for(self.csrf_key, self.csrf_nonce, self.fingerprint)


def certificate_officer(request: Request, certificate: x509.Certificate) -> Officer:
    context = server_context(request)
    authority = context.authority
    check_peer_certificate(authority.store, certificate, ca=context.ca, now=authority.clock())
    name = officer_for_certificate(authority.store, certificate)
    if name is None:
        raise PolicyDenied("this certificate does not carry the officer role")
    nonce, fresh = _csrf_nonce(request)
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    return Officer(name, fingerprint, nonce, fresh, csrf_key(request))


def _csrf_nonce(request: Request) -> tuple[str, bool]:
    """The CSRF nonce of the cookie, or a new one (then True)."""
    nonce = request.cookies.get(CSRF_COOKIE, "")
    fresh = not (16 <= len(nonce) <= 64 and nonce.isalnum())
    if fresh:
        nonce = secrets.token_hex(16)
    return nonce, fresh


def csrf_key(request: Request) -> bytes:
    """The CSRF key shared through the database, read once per app."""
    state = request.app.state
    with _KEY_LOCK:
        key: bytes | None = getattr(state, "console_csrf_key", None)
        if key is None:
            authority = server_context(request).authority
            with authority.store.transaction() as session:
                key = ConsoleRepository(session).secret(
                    CSRF_KEY_NAME, size=32, now=authority.clock()
                )
            state.console_csrf_key = key
    return key


def csrf_token_for(key: bytes, nonce: str, fingerprint: str) -> str:
    message = f"{nonce}|{fingerprint}".encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def check_csrf(officer: Officer, submitted: str | None) -> None:
    """Refuse (403) a form whose token is missing or does not match (constant time)."""
    if officer.new_nonce or not submitted:
        raise CsrfRefused("the form has no valid CSRF token: reload the page and try again")
    if not hmac.compare_digest(submitted.encode("ascii", "replace"), officer.csrf_token.encode()):
        raise CsrfRefused("the form has no valid CSRF token: reload the page and try again")


def finish(response: Response, officer: Officer | None) -> Response:
    """Add the security headers (and the CSRF cookie for a new session)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if officer is not None and officer.new_nonce:
        response.set_cookie(
            CSRF_COOKIE,
            officer.csrf_nonce,
            secure=True,
            httponly=True,
            samesite="strict",
            path="/",
        )
    return response
