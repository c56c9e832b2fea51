"""The OIDC ``nonce`` that binds an ID token to the key of one certificate request.

The client makes its key first and sends, as the authorization request's ``nonce``::

    <salt>.<base64url(SHA-256("ostiary-oidc-nonce" 0x00 salt 0x00 SubjectPublicKeyInfo DER))>

with 128 random bits of ``salt``. The provider copies the nonce into the ID token; the CA
recomputes it from the CSR's public key. An ID token therefore authorizes one key only: one
taken from a log, a browser history or another application using the same client id cannot
get a certificate for the taker's key. The salt keeps the nonce unpredictable (OpenID Connect
Core 3.1.2.1, 15.5.2) even when a key is reused. Clients import this module; it needs no
database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ostiary.core.errors import Unauthorized

_LABEL = b"ostiary-oidc-nonce"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _digest(salt: str, public_key: PublicKeyTypes) -> str:
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64url(hashlib.sha256(_LABEL + b"\0" + salt.encode("ascii") + b"\0" + spki).digest())


def nonce_for_key(public_key: PublicKeyTypes, *, salt: str | None = None) -> str:
    """A fresh nonce bound to ``public_key`` (``salt``: for tests only)."""
    chosen = salt if salt is not None else secrets.token_urlsafe(16)
    return f"{chosen}.{_digest(chosen, public_key)}"


def check_nonce_for_key(nonce: object, public_key: PublicKeyTypes) -> None:
    """Refuse (:class:`Unauthorized`) a nonce that was not made for ``public_key``."""
    if not isinstance(nonce, str) or nonce.count(".") != 1 or len(nonce) > 256:
        raise Unauthorized("the ID token carries no nonce made for this request's key")
    salt, digest = nonce.split(".")
    if len(salt) < 22 or not salt.isascii():
        raise Unauthorized("the ID token carries no nonce made for this request's key")
    expected = _digest(salt, public_key)
    if not hmac.compare_digest(digest.encode("ascii", "replace"), expected.encode("ascii")):
        raise Unauthorized(
            "the ID token's nonce does not match this request's key: the sign-in was made "
            "for another request"
        )
