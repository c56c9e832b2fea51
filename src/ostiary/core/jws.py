"""JWS signatures over a digest, and RFC 7523 client assertions (pure: no I/O, no clock).

Remote signing takes a digest (the caller hashed its JWS signing input itself) and returns
the JWS signature value (RFC 7515 section 5.1, RFC 7518 section 3): PKCS#1 v1.5 for RS*,
PSS with MGF1 and a salt as long as the hash for PS*, and for ES* the raw ``R || S``
concatenation (RFC 7518 section 3.4), not the DER that OpenSSL produces.

:func:`build_client_assertion` makes the whole JWT of RFC 7523 section 3 (the "certificate
credential" of Microsoft Entra ID): header ``alg`` PS256 with ``x5t#S256`` by default, or
RS256 with ``x5t`` (SHA-1 thumbprint, what older Entra samples send); claims ``aud``,
``iss = sub = client_id``, ``jti``, ``nbf``, ``iat``, ``exp``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from ostiary.core.errors import BadRequest, MalformedInput

#: The longest client assertion we make (RFC 7523 leaves it to the server; Entra allows 10 min).
MAX_ASSERTION_LIFETIME = timedelta(minutes=10)
#: The default lifetime of an assertion.
DEFAULT_ASSERTION_LIFETIME = timedelta(minutes=5)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
#: ES* algorithms and the curve each requires (RFC 7518 section 3.4).
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = tuple(_CURVES)
ALGORITHMS = RSA_ALGORITHMS + EC_ALGORITHMS

#: What a signing key can sign with: a key object whose ``sign()`` does the work (a file key,
#: or a PKCS#11 object subclassing the same ABCs).
SigningPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str) -> bytes:
    """Decode base64url (padding optional); :class:`MalformedInput` naming ``what``."""
    if not isinstance(text, str) or not text.isascii():
        raise MalformedInput(f"{what} must be base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise MalformedInput(f"{what} is not valid base64url") from None


def hash_for(alg: str) -> hashes.HashAlgorithm:
    """The hash of a JWS algorithm; :class:`BadRequest` for an algorithm we do not sign with."""
    if alg not in ALGORITHMS:
        raise BadRequest(
            f"algorithm {alg!r} is not supported: use one of {', '.join(ALGORITHMS)}", alg=alg
        )
    return _HASHES[alg[2:]]()


def check_algorithm(alg: str, public_key: object) -> hashes.HashAlgorithm:
    """Refuse an algorithm that does not fit the key (RS/PS for RSA, ESnnn for its curve)."""
    hash_algorithm = hash_for(alg)
    if isinstance(public_key, rsa.RSAPublicKey):
        if alg not in RSA_ALGORITHMS:
            raise BadRequest(f"{alg} needs an EC key; this key is RSA", alg=alg)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if _CURVES.get(alg) != public_key.curve.name:
            raise BadRequest(
                f"{alg} does not fit this key's curve ({public_key.curve.name})", alg=alg
            )
    else:
        raise BadRequest("this key type cannot make JWS signatures")
    return hash_algorithm


def sign_digest(key: SigningPrivateKey, alg: str, digest: bytes) -> bytes:
    """The JWS signature value of ``alg`` over a precomputed ``digest``."""
    hash_algorithm = check_algorithm(alg, key.public_key())
    if len(digest) != hash_algorithm.digest_size:
        raise BadRequest(
            f"{alg} needs a {hash_algorithm.digest_size}-byte digest, got {len(digest)} bytes",
            alg=alg,
        )
    prehashed = Prehashed(hash_algorithm)
    if isinstance(key, rsa.RSAPrivateKey):
        pad: padding.AsymmetricPadding
        if alg.startswith("PS"):
            pad = padding.PSS(padding.MGF1(hash_algorithm), padding.PSS.DIGEST_LENGTH)
        else:
            pad = padding.PKCS1v15()
        return key.sign(digest, pad, prehashed)
    der = key.sign(digest, ec.ECDSA(prehashed))
    r, s = decode_dss_signature(der)
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def sign_message(key: SigningPrivateKey, alg: str, message: bytes) -> bytes:
    """The JWS signature value of ``alg`` over ``message`` (hashed here)."""
    digest = hashes.Hash(hash_for(alg))
    digest.update(message)
    return sign_digest(key, alg, digest.finalize())


def default_algorithm(public_key: object) -> str:
    """PS256 for RSA, ESnnn for an EC key's curve."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        for alg, curve in _CURVES.items():
            if curve == public_key.curve.name:
                return alg
        raise BadRequest(f"curve {public_key.curve.name} has no JWS algorithm")
    return "PS256"


@dataclass(frozen=True)
class ClientAssertion:
    """A signed client assertion and the facts the audit log keeps about it."""

    token: str
    alg: str
    jti: str
    not_before: datetime
    expires_at: datetime
    #: SHA-256 of the JWS signing input (the digest that was signed).
    signing_input_sha256: bytes


def build_client_assertion(
    key: SigningPrivateKey,
    certificate: x509.Certificate,
    *,
    client_id: str,
    audience: str,
    now: datetime,
    lifetime: timedelta = DEFAULT_ASSERTION_LIFETIME,
    alg: str | None = None,
    thumbprint: str = "x5t#S256",
    kid: str | None = None,
    jti: str | None = None,
) -> ClientAssertion:
    """An RFC 7523 client assertion signed by ``key``, naming ``certificate`` in its header.

    ``thumbprint`` is ``x5t#S256`` (SHA-256 of the certificate's DER, RFC 7515 section 4.1.8)
    or ``x5t`` (SHA-1, section 4.1.7). ``nbf`` and ``iat`` are ``now``; ``exp`` is
    ``now + lifetime``, at most :data:`MAX_ASSERTION_LIFETIME`.
    """
    if not timedelta(seconds=1) <= lifetime <= MAX_ASSERTION_LIFETIME:
        raise BadRequest(
            "an assertion lives 1 s to "
            f"{int(MAX_ASSERTION_LIFETIME.total_seconds())} s; "
            f"{int(lifetime.total_seconds())} s was asked",
            maximum=int(MAX_ASSERTION_LIFETIME.total_seconds()),
        )
    alg = alg or default_algorithm(key.public_key())
    check_algorithm(alg, key.public_key())
    der = certificate.public_bytes(Encoding.DER)
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if thumbprint == "x5t#S256":
        header["x5t#S256"] = b64url(_digest(hashes.SHA256(), der))
    elif thumbprint == "x5t":
        header["x5t"] = b64url(_digest(hashes.SHA1(), der))  # JWS x5t is SHA-1 (RFC 7515 4.1.7)
    else:
        raise BadRequest("the thumbprint header is x5t#S256 or x5t")
    if kid:
        header["kid"] = kid
    issued = int(now.timestamp())
    expires = issued + int(lifetime.total_seconds())
    jti = jti or secrets.token_urlsafe(24)
    claims = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "nbf": issued,
        "iat": issued,
        "exp": expires,
    }
    signing_input = f"{_json_b64(header)}.{_json_b64(claims)}".encode("ascii")
    digest = _digest(hash_for(alg), signing_input)
    signature = sign_digest(key, alg, digest)
    return ClientAssertion(
        token=f"{signing_input.decode('ascii')}.{b64url(signature)}",
        alg=alg,
        jti=jti,
        not_before=datetime.fromtimestamp(issued, now.tzinfo),
        expires_at=datetime.fromtimestamp(expires, now.tzinfo),
        signing_input_sha256=_digest(hashes.SHA256(), signing_input),
    )


def _json_b64(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


__all__ = [
    "ALGORITHMS",
    "DEFAULT_ASSERTION_LIFETIME",
    "EC_ALGORITHMS",
    "MAX_ASSERTION_LIFETIME",
    "RSA_ALGORITHMS",
    "ClientAssertion",
    "SigningPrivateKey",
    "b64url",
    "b64url_decode",
    "build_client_assertion",
    "check_algorithm",
    "default_algorithm",
    "hash_for",
    "sign_digest",
    "sign_message",
]
