"""The JWS of every ACME POST (RFC 8555 section 6.2), verified with joserfc.

A request is a flattened JWS JSON object sent as ``application/jose+json``. Its protected
header carries ``alg``, ``nonce``, ``url`` and exactly one of ``jwk`` (newAccount, and
revokeCert signed by the certificate's key) or ``kid`` (the account URL, everywhere
else). :func:`parse_request` checks the shape and the header without the key;
the route finds the key (the account's, or the embedded ``jwk``) and calls
:meth:`JwsRequest.verify`. The nonce is spent only after the signature verifies, so that a
forged request cannot burn a client's nonce.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key
from joserfc.jws import FlattenedJSONSerialization

from ostiary.acme.errors import AcmeProblem, malformed

#: Signature algorithms accepted on requests (RFC 8555 section 6.2 requires ES256 and EdDSA;
#: RS256 for older clients). ``none`` and MACs (HS*) are refused: only EAB uses a MAC.
ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "RS256", "EdDSA")
JOSE_JSON = "application/jose+json"

_REGISTRY = jws.JWSRegistry(algorithms=list(ALGORITHMS), strict_check_header=False)
#: A protected header embedding a 4096-bit RSA key (newAccount, revokeCert) is ~1 KiB; the
#: body as a whole is capped by the route.
_REGISTRY.max_header_length = 4096
_KEY_TYPES = {"ES256": "EC", "ES384": "EC", "RS256": "RSA", "EdDSA": "OKP"}


def bad_algorithm(detail: str) -> AcmeProblem:
    return AcmeProblem("badSignatureAlgorithm", detail, algorithms=" ".join(ALGORITHMS))


#: A nonce's alphabet (RFC 7515 section 2, no padding).
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class JwsRequest:
    """A parsed, not yet verified, ACME request."""

    body: dict[str, str]
    header: dict[str, Any]

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def nonce(self) -> str:
        return str(self.header["nonce"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return str(kid) if kid is not None else None

    @property
    def jwk(self) -> dict[str, Any] | None:
        jwk = self.header.get("jwk")
        return dict(jwk) if isinstance(jwk, dict) else None

    def verify(self, key: Key) -> bytes:
        """The payload, if the signature verifies with ``key``; else ``malformed``."""
        if key.key_type != _KEY_TYPES[self.alg]:
            raise bad_algorithm(f"alg {self.alg} does not fit the account's {key.key_type} key")
        try:
            flattened = cast(FlattenedJSONSerialization, self.body)
            verified = jws.deserialize_json(
                flattened, key, algorithms=[self.alg], registry=_REGISTRY
            )
            return bytes(verified.payload)
        except (JoseError, ValueError, TypeError):
            raise malformed("the JWS signature does not verify") from None

    def payload_json(self, key: Key) -> dict[str, Any] | None:
        """The verified payload as a JSON object; None for POST-as-GET (empty payload)."""
        payload = self.verify(key)
        if payload == b"":
            return None
        try:
            value = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise malformed("the JWS payload is not JSON") from None
        if not isinstance(value, dict):
            raise malformed("the JWS payload must be a JSON object")
        return value


def import_account_key(jwk: dict[str, Any]) -> Key:
    """A public JWK as a key; private members or an unknown key type are ``malformed``."""
    if any(member in jwk for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise malformed("the JWK must be a public key: it holds private members")
    if jwk.get("kty") not in ("EC", "RSA", "OKP"):
        raise bad_algorithm(f"unsupported key type {str(jwk.get('kty'))[:16]!r}")
    try:
        return JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        raise malformed("the JWK cannot be read as a public key") from None


def account_key(jwk: dict[str, Any]) -> Key:
    """:func:`import_account_key` of a stored account's JWK, parsed once per process."""
    return _parsed_key(json.dumps(jwk, sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=4096)
def _parsed_key(canonical: str) -> Key:
    """Keyed by the JWK itself, so a changed account key (keyChange) is parsed afresh."""
    return import_account_key(json.loads(canonical))


def thumbprint(key: Key) -> str:
    """The RFC 7638 SHA-256 thumbprint, base64url."""
    return str(key.thumbprint())


def parse_request(
    content_type: str | None,
    body: bytes,
    *,
    url: str,
    key_by: str,
    nonce_required: bool = True,
) -> JwsRequest:
    """Check the media type, the JWS shape and the header rules of section 6.2-6.4.

    ``key_by`` is ``"kid"``, ``"jwk"`` or ``"either"`` (revokeCert): which header member
    must name the key. The URL in the header must equal ``url`` exactly. The inner JWS of a
    key change has no nonce (``nonce_required=False``).
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != JOSE_JSON:
        raise AcmeProblem(
            "malformed",
            f"ACME requests are {JOSE_JSON}, not {media[:60] or 'untyped'}",
            status=HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        )
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the request body is not JSON") from None
    if (
        not isinstance(document, dict)
        or set(document) != {"protected", "payload", "signature"}
        or not all(isinstance(v, str) for v in document.values())
    ):
        raise malformed("the body must be a flattened JWS: protected, payload and signature")
    header = _decode_header(document["protected"])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise bad_algorithm(f"alg {str(alg)[:16]!r} is not accepted")
    if header.get("url") != url:
        raise AcmeProblem(
            "unauthorized",
            "the JWS 'url' is not the URL this request was sent to",
            status=HTTPStatus.UNAUTHORIZED,
        )
    if nonce_required and not isinstance(header.get("nonce"), str):
        raise AcmeProblem("badNonce", "the JWS header has no nonce")
    if nonce_required and not _BASE64URL.fullmatch(header["nonce"]):
        # RFC 8555 section 6.5.2: not base64url is malformed (and a NUL in it would have
        # reached PostgreSQL, which refuses one: a 500).
        raise malformed("the JWS 'nonce' is not base64url")
    has_kid, has_jwk = "kid" in header, "jwk" in header
    if has_kid == has_jwk:
        raise malformed("the JWS header must carry exactly one of 'kid' and 'jwk'")
    if key_by == "kid" and not has_kid:
        raise malformed("this request must be signed by an account key named by 'kid'")
    if key_by == "jwk" and not has_jwk:
        raise malformed("this request must carry its key as 'jwk', not 'kid'")
    if has_jwk and not isinstance(header["jwk"], dict):
        raise malformed("the 'jwk' header member must be a JSON object")
    return JwsRequest(body=document, header=header)


def _decode_header(protected: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise malformed("the JWS protected header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise malformed("the JWS protected header must be a JSON object")
    return header


__all__ = [
    "ALGORITHMS",
    "JOSE_JSON",
    "JwsRequest",
    "account_key",
    "bad_algorithm",
    "import_account_key",
    "parse_request",
    "thumbprint",
]
