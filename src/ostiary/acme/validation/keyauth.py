"""The digest of a key authorization that dns-01, tls-alpn-01 and device-attest-01 prove.

RFC 8555 section 8.4 (dns-01: base64url of the SHA-256 in a TXT record), RFC 8737 section 3
(tls-alpn-01: the raw SHA-256 in the acmeIdentifier extension) and
draft-ietf-acme-device-attest (the SHA-256 as the attestation's nonce) all hash the same
``token + "." + thumbprint`` string.
"""

from __future__ import annotations

import hashlib

from ostiary.core.jws import b64url


def key_authorization_digest(key_authorization: str) -> bytes:
    """SHA-256 of the key authorization (its ASCII bytes)."""
    return hashlib.sha256(key_authorization.encode("ascii")).digest()


def key_authorization_txt(key_authorization: str) -> str:
    """The dns-01 TXT value: unpadded base64url of the digest (RFC 8555 section 8.4)."""
    return b64url(key_authorization_digest(key_authorization))


__all__ = ["key_authorization_digest", "key_authorization_txt"]
