"""JOSE plumbing shared by the token kinds, on top of joserfc.

* :func:`peek` reads a compact JWS (RFC 7515, section 7.1) *without* verifying it, only to
  find which key should verify it (``iss``, ``kid``, ``x5c``). Nothing it returns is trusted.
* :func:`verify_jws` checks the signature with one key, under an explicit ``alg`` allowlist:
  ``none``, HMAC and anything not listed are refused before any key is used (RFC 8725,
  sections 3.1-3.2), so "HS256 with the public key as the secret" cannot work.
* :func:`check_claims` validates the JWT claims (RFC 7519, section 4.1) with a 30 s leeway,
  bounds the token's own lifetime (``exp - iat``) and requires a usable ``jti``.

Every failure is :class:`~ostiary.core.errors.Unauthorized` with a message that states the
broken rule and never repeats the token or a key.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from joserfc import jwk, jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwa import JWSAlgModel
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry

from ostiary.core.errors import Unauthorized

#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
LEEWAY = timedelta(seconds=30)
#: A token longer than this is refused before it is parsed.
MAX_TOKEN_LENGTH = 16_384
#: ``jti`` length bounds: at least 128 bits in base64url, and what the database keeps.
MIN_TOKEN_ID_LENGTH = 22
MAX_TOKEN_ID_LENGTH = 255
_TOKEN_ID = re.compile(r"[\x21-\x7e]+")


class _AllowlistRegistry(JWSRegistry):
    """A JWS registry that knows only the algorithms it was given.

    joserfc falls back to its "recommended" list (which includes HS256) when no list is
    given, and warns on ``EdDSA`` even when the caller chose it; here the allowlist is always
    explicit and is the whole policy. Headers may hold an ``x5c`` chain, so the header size
    limit is raised from joserfc's 512 bytes.
    """

    max_header_length = 8192

    def __init__(self, algorithms: Collection[str]) -> None:
        super().__init__(algorithms=list(algorithms))

    def get_alg(self, name: str) -> JWSAlgModel:
        if not self.allowed or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


#: Reads a token's parts (with the size limits above) and allows no algorithm at all.
_PEEK_REGISTRY = _AllowlistRegistry(())


@dataclass(frozen=True)
class UnverifiedToken:
    """Header and claims of a compact JWS read without verification: hints, not facts.

    ``signature`` is the parsed JWS, which :func:`verify_jws` checks without reading the
    token again.
    """

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signature: jws.CompactSignature = field(repr=False, compare=False)


def peek(token: str, *, what: str, allowed_headers: Collection[str]) -> UnverifiedToken:
    """Decode ``token``'s header and claims without checking anything but their shape."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized(f"the {what} is missing or too long")
    try:
        obj = jws.extract_compact(token.strip().encode("ascii"), registry=_PEEK_REGISTRY)
        claims = json.loads(obj.payload)
    except (JoseError, ValueError, UnicodeError):
        raise Unauthorized(f"the {what} is not a well-formed JWT (compact JWS)") from None
    header = obj.headers()
    if not isinstance(claims, dict):
        raise Unauthorized(f"the {what}'s claims are not a JSON object")
    unexpected = set(header) - set(allowed_headers)
    if unexpected:
        names = ", ".join(sorted(_printable(k) for k in unexpected))
        raise Unauthorized(f"the {what} has header parameters we do not accept: {names}")
    if not isinstance(header.get("alg"), str):
        raise Unauthorized(f"the {what} has no 'alg' header")
    return UnverifiedToken(header=header, claims=claims, signature=obj)


def verify_jws(
    token: str | UnverifiedToken, key: jwk.Key, algorithms: Collection[str], *, what: str
) -> None:
    """Check the RFC 7515 signature of compact ``token`` with ``key``, ``alg`` in the list.

    A token already read by :func:`peek` is checked as it was read (the same bytes).
    """
    registry = _AllowlistRegistry(algorithms)
    try:
        if isinstance(token, UnverifiedToken):
            if not jws.validate_compact(token.signature, key, registry=registry):
                raise BadSignatureError()
        else:
            jws.deserialize_compact(token.strip(), key, registry=registry)
    except UnsupportedAlgorithmError:
        raise Unauthorized(
            f"the {what} is signed with an algorithm we do not accept here "
            f"(accepted: {', '.join(algorithms)})"
        ) from None
    except JoseError:
        raise Unauthorized(f"the {what}'s signature does not verify") from None


@dataclass(frozen=True)
class TokenTimes:
    issued_at: datetime
    expires_at: datetime


def check_claims(
    claims: Mapping[str, Any],
    *,
    what: str,
    now: datetime,
    audience: str,
    max_lifetime: timedelta,
    issuer: str | None = None,
    subject: str | None = None,
    require_token_id: bool = True,
) -> TokenTimes:
    """Validate the registered claims (RFC 7519, section 4.1); return ``iat`` and ``exp``.

    ``aud`` must be (or contain) ``audience``; ``iss`` and ``sub`` must equal the given
    values when given; ``exp``, ``iat`` (and ``nbf`` if present) hold within
    :data:`LEEWAY`; ``exp - iat`` is at most ``max_lifetime``, which bounds what a stolen key
    can forge; ``jti`` is required unless ``require_token_id`` is false.
    """
    options: dict[str, Any] = {
        "aud": {"essential": True, "value": audience},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    if issuer is not None:
        options["iss"] = {"essential": True, "value": issuer}
    if subject is not None:
        options["sub"] = {"essential": True, "value": subject}
    if require_token_id:
        options["jti"] = {"essential": True}
    registry = JWTClaimsRegistry(
        now=int(now.timestamp()), leeway=int(LEEWAY.total_seconds()), **options
    )
    try:
        registry.validate(dict(claims))
    except ExpiredTokenError:
        raise Unauthorized(f"the {what} has expired") from None
    except MissingClaimError as exc:
        raise Unauthorized(f"the {what} lacks required claims ({exc.claim})") from None
    except InvalidClaimError as exc:
        raise Unauthorized(_invalid_claim_message(what, exc.claim)) from None
    if float(claims["exp"]) - float(claims["iat"]) > max_lifetime.total_seconds():
        raise Unauthorized(
            f"the {what} is valid for longer than the {_minutes(max_lifetime)} allowed (exp - iat)"
        )
    issued_at = _time(claims["iat"], what=what)
    expires_at = _time(claims["exp"], what=what)
    if require_token_id:
        check_token_id(claims["jti"], what=what)
    return TokenTimes(issued_at=issued_at, expires_at=expires_at)


def check_token_id(value: object, *, what: str) -> str:
    """A ``jti`` we can record: printable ASCII of 22 to 255 characters."""
    if (
        not isinstance(value, str)
        or not MIN_TOKEN_ID_LENGTH <= len(value) <= MAX_TOKEN_ID_LENGTH
        or not _TOKEN_ID.fullmatch(value)
    ):
        raise Unauthorized(
            f"the {what}'s 'jti' must be {MIN_TOKEN_ID_LENGTH} to {MAX_TOKEN_ID_LENGTH} "
            "printable characters (at least 128 random bits)"
        )
    return value


def new_token_id() -> str:
    """A fresh ``jti``: 128 bits from the CSPRNG, base64url (22 characters)."""
    return secrets.token_urlsafe(16)


def _invalid_claim_message(what: str, claim: str) -> str:
    messages = {
        "aud": f"the {what} is for another audience (another CA, or another purpose)",
        "iss": f"the {what}'s issuer does not match",
        "sub": f"the {what}'s subject does not match",
        "nbf": f"the {what} is not valid yet",
        "iat": f"the {what} claims to be issued in the future",
        "exp": f"the {what}'s expiry is not a valid time",
        "jti": f"the {what}'s 'jti' is not a string",
    }
    return messages.get(claim, f"the {what} has an invalid {_printable(claim)!r} claim")


def _time(value: Any, *, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        raise Unauthorized(f"the {what} has a time claim out of range") from None


def _minutes(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    return f"{minutes} minutes" if minutes != 1 else "1 minute"


def _printable(text: object) -> str:
    shown = "".join(c for c in str(text)[:40] if c.isprintable())
    return shown or "?"


# --------------------------------------------------------------------------- keys


def algorithms_for(key: PublicKeyTypes) -> tuple[str, ...]:
    """The JWS ``alg`` values (RFC 7518, RFC 8037, RFC 9864) a key of this type may sign with.

    The key type dictates the algorithm, never the token's header: ES256/ES384/ES512 by
    curve, RS256 or PS256 for RSA, Ed25519/Ed448 (and the older, polymorphic ``EdDSA``).
    The first entry is the one we sign with.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        alg = by_curve.get(key.curve.name)
        return (alg,) if alg else ()
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256", "PS256")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("Ed25519", "EdDSA")
    if isinstance(key, ed448.Ed448PublicKey):
        return ("Ed448", "EdDSA")
    return ()


def import_public_key(key: PublicKeyTypes) -> jwk.Key:
    """A joserfc key for a cryptography public key (through its SubjectPublicKeyInfo)."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _import_pem(pem, key)


def import_private_key(key: PrivateKeyTypes) -> jwk.Key:
    """A joserfc key for a cryptography private key (the PEM stays in memory)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _import_pem(pem, key.public_key())


def _import_pem(pem: bytes, public_key: object) -> jwk.Key:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return jwk.ECKey.import_key(pem)
    if isinstance(public_key, rsa.RSAPublicKey):
        return jwk.RSAKey.import_key(pem)
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return jwk.OKPKey.import_key(pem)
    raise Unauthorized(f"a {type(public_key).__name__} cannot sign tokens")


def sign_jwt(header: Mapping[str, Any], claims: Mapping[str, Any], key: jwk.Key) -> str:
    """Sign ``claims`` as a compact JWS (a JWT, ``typ`` = ``JWT``) with ``header['alg']``."""
    registry = _AllowlistRegistry((str(header["alg"]),))
    return jwt.encode(dict(header), dict(claims), key, registry=registry)


def sign_jwt_in_place(
    header: Mapping[str, Any], claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey
) -> str:
    """Like :func:`sign_jwt` (ES256/384/512), for a key that cannot leave its device (a
    TPM): the signing input goes to ``key.sign`` and the DER signature becomes the JWS
    ``r || s`` form (RFC 7518 section 3.4).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    digests = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}
    algorithm = digests[str(header["alg"])]
    signing_input = b".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(algorithm)))
    size = (key.curve.key_size + 7) // 8
    signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return (signing_input + b"." + _b64url(signature)).decode("ascii")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64_der(data: bytes) -> str:
    """Standard base64 (not base64url), as ``x5c`` entries are (RFC 7515, section 4.1.6)."""
    return base64.b64encode(data).decode("ascii")


def from_b64_der(text: object, *, what: str) -> bytes:
    if not isinstance(text, str):
        raise Unauthorized(f"the {what}'s 'x5c' entry is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise Unauthorized(f"the {what}'s 'x5c' entry is not base64") from None
