"""Sign in with the company's OpenID provider to get a certificate (a credential source).

The flow (OAuth 2.0 for native apps, RFC 8252; PKCE, RFC 7636; OpenID Connect Core 3.1):

1. ask the CA how to sign in for the provisioner (``GET /provisioners/{name}``);
2. the key is already made; the ``nonce`` commits to it (:mod:`ostiary.provisioners.oidc_binding`);
3. listen on ``http://127.0.0.1:<free port>/callback`` (:class:`LoopbackListener`), open the
   browser at the provider's authorization endpoint with ``state``, ``nonce`` and an S256
   code challenge (or print that URL alone on a line and wait);
4. the provider redirects to the listener with ``code`` and ``state``; a wrong ``state`` or an
   ``error`` (``access_denied`` when the user declines) ends the sign-in with a clear message;
5. redeem the code with the verifier: at the provider's token endpoint (public app), or
   through the CA (confidential app: the client secret never leaves the CA); only then does
   the browser's page say how the sign-in ended (a refused code is not "Signed in");
6. send the CSR and the ID token to ``POST /provisioners/{name}/sign``.

The listener always closes, whatever happens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import queue
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509

from ostiary.client.api import IssuedCertificate, OstiaryClient
from ostiary.core.errors import BadRequest, OstiaryError, Unauthorized, Unavailable
from ostiary.provisioners.oidc_binding import nonce_for_key
from ostiary.provisioners.oidc_discovery import check_provider_url

#: Where the provider sends the browser back to.
CALLBACK_PATH = "/callback"
#: How long to wait for the sign-in by default.
SIGN_IN_TIMEOUT = 300.0
#: How long the browser's page waits for the outcome of the sign-in (code redemption).
OUTCOME_WAIT = 60.0

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Ostiary</title></head>"
    "<body><p>{message}</p></body></html>"
)


# --------------------------------------------------------------------------- PKCE


def new_code_verifier() -> str:
    """A PKCE code verifier: 32 random octets, base64url (43 characters; RFC 7636 4.1)."""
    return _b64url(secrets.token_bytes(32))


def code_challenge_s256(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` (RFC 7636 4.2)."""
    if not 43 <= len(verifier) <= 128:
        raise BadRequest("a PKCE code verifier has 43 to 128 characters")
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------- listener


class LoopbackListener:
    """A one-shot HTTP listener on ``127.0.0.1`` (a free port) for the provider's redirect.

    Use as a context manager: it closes on exit, even after an error or a timeout. Requests
    for other paths (a browser's ``/favicon.ico``) get 404 and are ignored; only the first
    request to :data:`CALLBACK_PATH` counts. The browser's page waits (at most
    :data:`OUTCOME_WAIT` seconds) for :meth:`finish` to say how the sign-in ended (the code
    redeemed, the ID token checked), so that it never says "Signed in" for a sign-in that
    failed after the redirect; closing without :meth:`finish` reports a failure.
    """

    def __init__(self, path: str = CALLBACK_PATH) -> None:
        self._path = path
        self._answers: queue.Queue[dict[str, str]] = queue.Queue(maxsize=1)
        self._outcomes: queue.Queue[str] = queue.Queue(maxsize=1)
        listener = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != listener._path:
                    self._reply(404, "Not found.")
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
                try:
                    listener._answers.put_nowait(query)
                except queue.Full:
                    self._reply(409, "This sign-in was already answered.")
                    return
                try:
                    outcome = listener._outcomes.get(timeout=OUTCOME_WAIT)
                except queue.Empty:
                    outcome = "The sign-in did not finish in time: see the terminal."
                self._reply(200, outcome + " You can close this window.")

            def _reply(self, status: int, message: str) -> None:
                body = _PAGE.format(message=html.escape(message)).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the query holds the code: never logged

        self._server = HTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._started = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    def __enter__(self) -> Self:
        self._thread.start()
        self._started = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def finish(self, outcome: str) -> None:
        """What the browser's page says (once; later calls are ignored)."""
        try:
            self._outcomes.put_nowait(outcome)
        except queue.Full:
            pass

    def close(self) -> None:
        self.finish("The sign-in did not succeed: see the terminal for why.")
        if self._started:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._started = False
        self._server.server_close()

    def wait(self, timeout: float) -> dict[str, str]:
        """The callback's query parameters; :class:`Unavailable` after ``timeout`` seconds."""
        try:
            return self._answers.get(timeout=timeout)
        except queue.Empty:
            raise Unavailable(
                f"no sign-in within {int(timeout)} s: the browser never came back to "
                f"{self.redirect_uri} (run the command again)"
            ) from None


# --------------------------------------------------------------------------- sign-in


@dataclass(frozen=True)
class AuthorizationRequest:
    """One sign-in attempt: its URL and the secrets the callback and redemption need."""

    url: str
    state: str = field(repr=False)
    nonce: str
    code_verifier: str = field(repr=False)
    redirect_uri: str


def authorization_request(
    info: Mapping[str, Any], *, public_key: Any, redirect_uri: str
) -> AuthorizationRequest:
    """The authorization URL (OpenID Connect Core 3.1.2.1) with state, nonce and PKCE."""
    endpoint = check_provider_url(
        str(info.get("authorization_endpoint", "")), what="the authorization endpoint"
    )
    verifier = new_code_verifier()
    state = secrets.token_urlsafe(24)
    nonce = nonce_for_key(public_key)
    scopes = info.get("scopes") or ["openid"]
    query = {
        "response_type": "code",
        "client_id": str(info.get("client_id", "")),
        "redirect_uri": redirect_uri,
        "scope": " ".join(str(s) for s in scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": code_challenge_s256(verifier),
        "code_challenge_method": "S256",
    }
    separator = "&" if urlsplit(endpoint).query else "?"
    return AuthorizationRequest(
        url=endpoint + separator + urlencode(query),
        state=state,
        nonce=nonce,
        code_verifier=verifier,
        redirect_uri=redirect_uri,
    )


def read_callback(answer: Mapping[str, str], request: AuthorizationRequest) -> str:
    """The authorization code of a callback, after the state and error checks."""
    state = answer.get("state")
    matches = state is not None and hmac.compare_digest(
        state.encode("utf-8", "replace"), request.state.encode("ascii")
    )
    error = answer.get("error")
    if not matches and (error is None or state is not None):
        raise Unauthorized(
            "the sign-in callback carries a wrong 'state': it does not belong to this sign-in "
            "(nothing was requested)"
        )
    # An error answer without any state (some providers drop it) can only end the sign-in,
    # which a wrong callback would do anyway: report the provider's reason.
    if error is not None:
        description = answer.get("error_description", "")[:200]
        if error == "access_denied":
            raise Unauthorized(
                "the sign-in was declined at the provider (access_denied): no certificate "
                "was requested" + (f" ({description})" if description else "")
            )
        raise Unauthorized(
            f"the provider refused the sign-in: {error[:64]}"
            + (f" ({description})" if description else "")
        )
    code = answer.get("code")
    if not code:
        raise Unauthorized("the sign-in callback carries no authorization code")
    return code


def check_id_token_origin(id_token: str, info: Mapping[str, Any], nonce: str) -> None:
    """Client-side sanity checks before the CA verifies for real: issuer and nonce.

    A token from another issuer means the CA's provisioner points at another provider than
    the one that answered: say so instead of sending it.
    """
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise Unauthorized("the provider returned an ID token that is not a JWT") from None
    if not isinstance(claims, dict):
        raise Unauthorized("the provider returned an ID token that is not a JWT")
    issuer = info.get("issuer")
    if claims.get("iss") != issuer:
        raise Unauthorized(
            f"wrong provider: the ID token is from {str(claims.get('iss'))[:200]!r}, "
            f"but the provisioner trusts {issuer!r}"
        )
    if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise Unauthorized("the ID token's nonce is not the one this sign-in sent")


Opener = Callable[[str], object]


@dataclass
class OIDCSignIn:
    """A credential source that signs the person in (browser, loopback redirect).

    ``open_browser`` opens the URL (e.g. :func:`webbrowser.open`); None prints it through
    ``announce`` (``--no-browser``). ``redeem`` replaces the public-app code redemption at
    the provider's token endpoint (tests; another HTTP stack).
    """

    provisioner: str
    open_browser: Opener | None = None
    announce: Callable[[str], None] = print
    timeout: float = SIGN_IN_TIMEOUT
    ca_file: Path | None = None
    redeem: Callable[[Mapping[str, Any], AuthorizationRequest, str], str] | None = None

    def id_token_for(self, client: OstiaryClient, csr: x509.CertificateSigningRequest) -> str:
        """Sign in and return an ID token whose nonce commits to ``csr``'s key."""
        return self.id_token_for_key(client, csr.public_key())

    def id_token_for_key(self, client: OstiaryClient, public_key: Any) -> str:
        """Sign in and return an ID token whose nonce commits to ``public_key`` (an X.509
        request's or an SSH key, as a pyca/cryptography public key).
        """
        info = client.provisioner_info(self.provisioner)
        if info.get("type") != "oidc":
            raise BadRequest(f"provisioner {self.provisioner!r} is not an OpenID provisioner")
        with LoopbackListener() as listener:
            request = authorization_request(
                info, public_key=public_key, redirect_uri=listener.redirect_uri
            )
            if self.open_browser is None:
                self.announce(request.url)
            else:
                self.open_browser(request.url)
            answer = listener.wait(self.timeout)
            try:
                id_token = self._redeem(client, info, request, read_callback(answer, request))
                check_id_token_origin(id_token, info, request.nonce)
            except OstiaryError as exc:
                listener.finish(f"The sign-in did not succeed: {exc.detail}")
                raise
            listener.finish("Signed in.")
        return id_token

    def _redeem(
        self,
        client: OstiaryClient,
        info: Mapping[str, Any],
        request: AuthorizationRequest,
        code: str,
    ) -> str:
        if info.get("code_exchange") == "ca":
            return client.redeem_code(
                self.provisioner, code, request.code_verifier, request.redirect_uri
            )
        try:
            if self.redeem is not None:
                return self.redeem(info, request, code)
            return redeem_at_provider(info, request, code, ca_file=self.ca_file)
        except Unauthorized as exc:
            if "invalid_client" not in exc.detail:
                raise
            raise Unauthorized(
                f"{exc.detail}: the provider wants a client secret, but provisioner "
                f"{self.provisioner!r} is set up as a public app; the CA owner gives it the "
                f"secret (ostiary ca provisioner update {self.provisioner} "
                "--client-secret-file FILE) or makes the app public at the provider (Entra: "
                "'Allow public client flows')"
            ) from None

    def enroll(
        self,
        client: OstiaryClient,
        csr: x509.CertificateSigningRequest,
        not_after: timedelta | datetime | str | None = None,
    ) -> IssuedCertificate:
        """Sign in, then have the CA sign ``csr``."""
        id_token = self.id_token_for(client, csr)
        return client.sign_with_id_token(csr, self.provisioner, id_token, not_after)


def redeem_at_provider(
    info: Mapping[str, Any],
    request: AuthorizationRequest,
    code: str,
    *,
    ca_file: Path | None = None,
) -> str:
    """Redeem ``code`` at the provider's token endpoint as a public client (RFC 7636 4.5)."""
    from ostiary.provisioners.oidc_code_exchange import post_token_request

    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.redirect_uri,
        "client_id": str(info.get("client_id", "")),
        "code_verifier": request.code_verifier,
    }
    return post_token_request(str(info.get("token_endpoint", "")), form, ca_file=ca_file)


__all__ = [
    "CALLBACK_PATH",
    "SIGN_IN_TIMEOUT",
    "AuthorizationRequest",
    "LoopbackListener",
    "OIDCSignIn",
    "authorization_request",
    "check_id_token_origin",
    "code_challenge_s256",
    "new_code_verifier",
    "read_callback",
    "redeem_at_provider",
]
