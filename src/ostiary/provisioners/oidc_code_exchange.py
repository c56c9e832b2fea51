"""Redeeming an authorization code at an OpenID provider's token endpoint (RFC 6749 4.1.3).

A public app's client redeems its own code (:func:`post_token_request`, which the client
imports: nothing here needs the store). For a confidential app the client secret stays on
the CA: the provisioner's record keeps only the *path* of a file holding it
(:func:`read_client_secret`), and :func:`redeem_code` uses it to redeem the client's code,
as the CA's own sign-in flow does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from ostiary.core.errors import BadRequest, Unauthorized, Unavailable
from ostiary.provisioners.oidc_discovery import ProviderMetadata, check_provider_url


class OIDCClient(Protocol):
    """The OpenID client an ``oidc`` provisioner is, as far as code exchange needs it."""

    @property
    def name(self) -> str: ...

    @property
    def client_id(self) -> str: ...

    @property
    def client_secret_file(self) -> str | None: ...

    @property
    def confidential(self) -> bool: ...

    @property
    def ca_file(self) -> Path | None: ...

    def metadata(self) -> ProviderMetadata: ...


def read_client_secret(provisioner: OIDCClient) -> str:
    """The client secret from its file (first line); never logged, never sent to clients."""
    path = Path(provisioner.client_secret_file or "")
    try:
        secret = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeError):
        raise Unavailable(
            f"provisioner {provisioner.name!r}: its client secret file cannot be read"
        ) from None
    if not secret or not secret[0].strip():
        raise BadRequest(f"provisioner {provisioner.name!r}: its client secret file is empty")
    return secret[0].strip()


def check_loopback_redirect(redirect_uri: str) -> str:
    """A loopback redirect URI (RFC 8252 section 7.3): ``http://127.0.0.1:<port>/...``."""
    parts = urlsplit(redirect_uri)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1") or not parts.port:
        raise BadRequest("the redirect URI must be http://127.0.0.1:<port>/... (RFC 8252 7.3)")
    return redirect_uri


def redeem_code(
    provisioner: OIDCClient,
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    timeout: float = 10.0,
) -> str:
    """Redeem an authorization code at the provider with the client secret; the ID token.

    Only for confidential apps: the secret stays here. The provider checks the PKCE
    verifier and the redirect URI against the authorization request, so the CA learns and
    returns nothing the client could not have had with a public app.
    """
    if not provisioner.confidential:
        raise BadRequest(
            f"provisioner {provisioner.name!r} is a public client: redeem the code yourself"
        )
    check_loopback_redirect(redirect_uri)
    metadata = provisioner.metadata()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": code_verifier,
        "redirect_uri": redirect_uri,
        "client_id": provisioner.client_id,
        "client_secret": read_client_secret(provisioner),
    }
    return post_token_request(
        metadata.token_endpoint, form, ca_file=provisioner.ca_file, timeout=timeout
    )


def post_token_request(
    token_endpoint: str,
    form: Mapping[str, str],
    *,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    verify: Any = None,
) -> str:
    """POST a token request (RFC 6749 4.1.3) and return the ``id_token`` of the answer."""
    from ostiary.tls import web_client_context

    url = check_provider_url(token_endpoint, what="the token endpoint")
    if verify is None:
        verify = web_client_context(ca_file) if url.startswith("https://") else True
    try:
        with httpx.Client(verify=verify, timeout=timeout, trust_env=False) as http:
            response = http.post(url, data=dict(form), headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"the OpenID provider's token endpoint cannot be reached: {type(exc).__name__}"
        ) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Unavailable(f"the token endpoint answered {response.status_code} without JSON")
    if response.status_code != 200 or "error" in answer:
        error = str(answer.get("error", "error"))[:64]
        description = str(answer.get("error_description", ""))[:200]
        raise Unauthorized(
            f"the OpenID provider refused the code: {error}"
            + (f" ({description})" if description else "")
        )
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise Unauthorized("the OpenID provider's answer has no ID token (ask for scope 'openid')")
    return id_token


__all__ = [
    "OIDCClient",
    "check_loopback_redirect",
    "post_token_request",
    "read_client_secret",
    "redeem_code",
]
