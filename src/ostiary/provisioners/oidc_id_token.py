"""Verifying an OpenID Connect ID token for an ``oidc`` provisioner (OpenID Connect Core 3.1.3.7).

- the signature, with the provider's key from discovery (``jwks_uri``; cached, fetched again
  for an unknown ``kid``; a token without ``kid`` needs a provider with exactly one key), only
  with the algorithms the provider announces among RSA/ECDSA ones (never ``none`` or HMAC);
- ``iss`` (the discovered issuer), ``aud`` (our client id; with several audiences ``azp`` must
  be ours), ``exp``/``iat``/``nbf`` with 30 s of leeway, and ``exp - iat`` at most a day;
- Entra's ``tid`` when a tenant is configured.

The ``nonce`` is the caller's: a CSR sign-in binds it to the key (:mod:`.oidc_binding`), the
CA's own sign-in flow to its flow. Single use: the ``jti`` if the token has one, else the
SHA-256 of the token (:func:`id_token_spend_id`), spent in the used-tokens table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ostiary.core.errors import Unauthorized
from ostiary.provisioners import _jose
from ostiary.provisioners.oidc_discovery import ProviderDirectory, ProviderMetadata

#: The longest ``exp - iat`` an ID token may have.
MAX_ID_TOKEN_LIFETIME = timedelta(hours=24)

_WHAT = "ID token"
_HEADERS = frozenset({"alg", "kid", "typ", "x5t", "x5t#S256", "cty"})


class RelyingParty(Protocol):
    """The client an ID token must have been made for, and where its provider is found."""

    @property
    def client_id(self) -> str: ...

    @property
    def tenant_id(self) -> str | None: ...

    @property
    def ca_file(self) -> Path | None: ...

    @property
    def directory(self) -> ProviderDirectory: ...

    def metadata(self) -> ProviderMetadata: ...


def verify_id_token(
    party: RelyingParty, id_token: str, *, now: datetime
) -> tuple[Mapping[str, Any], datetime]:
    """The claims of ``id_token`` and its end, once signature, issuer, audience and times
    check out; :class:`Unauthorized` (or the provider's :class:`Unavailable`) otherwise.
    """
    unverified = _jose.peek(id_token, what=_WHAT, allowed_headers=_HEADERS)
    kid = unverified.header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthorized("the ID token's 'kid' is not a string")
    metadata = party.metadata()
    key = party.directory.key_for(metadata, kid, ca_file=party.ca_file)
    _jose.verify_jws(id_token, key, metadata.algorithms, what=_WHAT)
    claims = unverified.claims
    times = _jose.check_claims(
        claims,
        what=_WHAT,
        now=now,
        audience=party.client_id,
        issuer=metadata.issuer,
        max_lifetime=MAX_ID_TOKEN_LIFETIME,
        require_token_id=False,
    )
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != party.client_id:
        raise Unauthorized("the ID token has several audiences and 'azp' is not this client")
    if party.tenant_id is not None and "tid" not in claims:
        raise Unauthorized(
            "the ID token has no tenant id ('tid'), which this provisioner requires "
            f"({party.tenant_id}): is the provider Entra ID?"
        )
    if party.tenant_id is not None and claims.get("tid") != party.tenant_id:
        raise Unauthorized("the ID token is from another tenant ('tid')")
    return claims, times.expires_at


def id_token_spend_id(claims: Mapping[str, Any], token: str) -> str:
    """The id an ID token is spent under: its ``jti``, else the SHA-256 of the token."""
    jti = claims.get("jti")
    if isinstance(jti, str) and 16 <= len(jti) <= _jose.MAX_TOKEN_ID_LENGTH and jti.isprintable():
        return f"jti:{jti}"[: _jose.MAX_TOKEN_ID_LENGTH]
    return "sha256:" + hashlib.sha256(token.strip().encode("ascii", "replace")).hexdigest()


def id_token_kept_until(expires_at: datetime) -> datetime:
    """How long a spent ID token's id is kept: past its ``exp`` by the clock leeway
    :func:`verify_id_token` allows, so that no verifier can still accept a replay.
    """
    return expires_at + _jose.LEEWAY


__all__ = [
    "MAX_ID_TOKEN_LIFETIME",
    "RelyingParty",
    "id_token_kept_until",
    "id_token_spend_id",
    "verify_id_token",
]
