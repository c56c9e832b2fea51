"""Holder tokens: a JWT signed by a certificate's own key, for renewal and revocation.

Behind a proxy that terminates TLS the CA cannot see the client certificate, so the holder
proves possession of its key with a JWT (RFC 7519) in compact JWS form (RFC 7515)::

    header  {"alg": <by key type>, "typ": "JWT", "x5c": [<certificate DER, base64>]}
    claims  {"aud": "urn:ostiary:ca:<fp>:renew" (or ":revoke"), "sub": <serial hex>,
             "iat", "nbf", "exp" (at most 5 minutes after iat), "jti"}

``x5c`` is RFC 7515, section 4.1.6 (standard base64 DER, the signer's certificate first).
The algorithm follows from the certificate's key (:func:`_jose.algorithms_for`): ES256,
ES384 or ES512 by curve, RS256 or PS256 for RSA, Ed25519 / Ed448 (or ``EdDSA``).

This module needs no database and no server: the client SDK mints with
:func:`mint_holder_token`. What the CA then checks about the certificate (that it issued it,
revocation, validity, single use) is in :mod:`ostiary.provisioners.tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)

from ostiary.core.errors import BadRequest, Unauthorized
from ostiary.core.held_keys import HeldECPrivateKey
from ostiary.core.lifetime import format_duration
from ostiary.provisioners import _jose
from ostiary.provisioners.base import CAIdentity

#: Longest ``exp - iat`` of a holder token, minted or received.
HOLDER_TOKEN_TTL = timedelta(minutes=5)
HolderPurpose = Literal["renew", "revoke"]

_HEADERS = frozenset({"alg", "typ", "x5c", "kid"})
_WHAT = "holder token"
_SERIAL = re.compile(r"[0-9a-fA-F]{1,40}")
_MAX_CHAIN = 5


@dataclass(frozen=True)
class HolderToken:
    """A holder token whose signature and claims verified; the certificate is not checked yet."""

    certificate: x509.Certificate
    purpose: HolderPurpose
    token_id: str
    expires_at: datetime


def mint_holder_token(
    certificate: x509.Certificate,
    private_key: CertificateIssuerPrivateKeyTypes,
    *,
    purpose: HolderPurpose,
    ca: CAIdentity,
    now: datetime,
    lifetime: timedelta = HOLDER_TOKEN_TTL,
) -> str:
    """A renew or revoke token for ``certificate``, signed by its ``private_key``."""
    if purpose not in ("renew", "revoke"):
        raise BadRequest(f"a holder token is for 'renew' or 'revoke', not {purpose!r}")
    if not timedelta(seconds=1) <= lifetime <= HOLDER_TOKEN_TTL:
        raise BadRequest(
            f"a holder token's lifetime must be between 1s and {format_duration(HOLDER_TOKEN_TTL)}"
        )
    public_key = certificate.public_key()
    if _spki(private_key.public_key()) != _spki(public_key):
        raise BadRequest("the private key does not belong to the certificate")
    algorithms = _jose.algorithms_for(public_key)
    if not algorithms:
        raise BadRequest(f"a {type(public_key).__name__} key cannot sign holder tokens")
    issued = int(now.timestamp())
    header = {
        "alg": algorithms[0],
        "x5c": [_jose.b64_der(certificate.public_bytes(serialization.Encoding.DER))],
    }
    claims = {
        "aud": ca.audience(purpose),
        "sub": f"{certificate.serial_number:x}",
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime.total_seconds()),
        "jti": _jose.new_token_id(),
    }
    if isinstance(private_key, HeldECPrivateKey):
        # A key held by a TPM or a token: it signs, but cannot be handed to the JOSE library.
        return _jose.sign_jwt_in_place({**header, "typ": "JWT"}, claims, private_key)
    return _jose.sign_jwt(header, claims, _jose.import_private_key(private_key))


def read_holder_token(
    token: str, *, purpose: HolderPurpose, ca: CAIdentity, now: datetime
) -> HolderToken:
    """Verify the token's signature with the key of its ``x5c`` certificate, and its claims.

    The certificate itself is only parsed here: whether the CA issued it, whether it is
    revoked or expired, is for the caller to check against the store.
    """
    unverified = _jose.peek(token, what=_WHAT, allowed_headers=_HEADERS)
    certificate = _certificate_of(unverified.header)
    try:
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise Unauthorized(f"the {_WHAT}'s certificate has a key we cannot read") from None
    algorithms = _jose.algorithms_for(public_key)
    if not algorithms:
        raise Unauthorized(f"the {_WHAT}'s certificate has a key that cannot sign tokens")
    _jose.verify_jws(token, _jose.import_public_key(public_key), algorithms, what=_WHAT)
    times = _jose.check_claims(
        unverified.claims,
        what=_WHAT,
        now=now,
        audience=ca.audience(purpose),
        max_lifetime=HOLDER_TOKEN_TTL,
    )
    _check_subject(unverified.claims, certificate)
    return HolderToken(
        certificate=certificate,
        purpose=purpose,
        token_id=str(unverified.claims["jti"]),
        expires_at=times.expires_at,
    )


def _certificate_of(header: Mapping[str, Any]) -> x509.Certificate:
    chain = header.get("x5c")
    if not isinstance(chain, list) or not 1 <= len(chain) <= _MAX_CHAIN:
        raise Unauthorized(f"the {_WHAT} has no 'x5c' header with the certificate")
    der = _jose.from_b64_der(chain[0], what=_WHAT)
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise Unauthorized(f"the {_WHAT}'s 'x5c' certificate cannot be parsed") from None


def _check_subject(claims: Mapping[str, Any], certificate: x509.Certificate) -> None:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not _SERIAL.fullmatch(subject):
        raise Unauthorized(f"the {_WHAT}'s 'sub' must be the certificate's serial number in hex")
    if int(subject, 16) != certificate.serial_number:
        raise Unauthorized(f"the {_WHAT}'s 'sub' is not the serial number of its certificate")


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
