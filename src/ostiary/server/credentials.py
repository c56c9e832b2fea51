"""Who is asking: the TLS client certificate, or a Bearer token (RFC 6750 section 2.1).

Renewal and revocation accept the holder of a certificate, proven either by the mTLS
handshake (the certificate reaches the app through the ASGI TLS extension, see
:mod:`ostiary.server.tls_scope`) or, behind a TLS-terminating proxy, by a holder token signed
with the certificate's key. Revocation and the certificate list also accept an admin token.
An explicit ``Authorization`` header wins over the connection's certificate.

The handshake proves only that the certificate chains to our root and that the client holds
its key; it deliberately skips the validity period (see :mod:`ostiary.tls`). The rest (this
CA recorded it, it is not revoked, it is within its validity) is checked by the endpoints and
refused with a problem document rather than a TLS alert.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from fastapi import Request

from ostiary.core.encoding import serial_hex
from ostiary.core.errors import Unauthorized
from ostiary.provisioners import CAIdentity
from ostiary.provisioners.renewal import check_certificate_time, find_issued_certificate
from ostiary.server.tls_scope import client_certificate
from ostiary.store import Store

#: Longest ``Authorization`` header value read.
MAX_AUTHORIZATION = 16 * 1024


@dataclass(frozen=True)
class Holder:
    """A verified holder of one of our certificates."""

    certificate: x509.Certificate
    via: Literal["mtls", "token"]

    @property
    def actor(self) -> str:
        return f"certificate:{serial_hex(self.certificate.serial_number)}"


def bearer_token(request: Request) -> str | None:
    """The Bearer token of the request, None without an ``Authorization`` header."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_AUTHORIZATION:
        raise Unauthorized("the Bearer token is too long")
    return token


def peer_certificate(request: Request) -> x509.Certificate | None:
    """The client certificate the TLS handshake verified, if any."""
    return client_certificate(request.scope)


def token_carries_certificate(token: str) -> bool:
    """Whether a JWT's (unverified) header has ``x5c``: a holder token, not an admin token.

    Only chooses which verifier runs; the verifier then checks everything.
    """
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise Unauthorized("the Bearer token is not a JWT") from None
    return isinstance(header, dict) and "x5c" in header


def check_peer_certificate(
    store: Store, certificate: x509.Certificate, *, ca: CAIdentity, now: datetime
) -> None:
    """Refuse an mTLS certificate this CA did not record, revoked, or outside its validity."""
    with store.transaction(read_only=True) as session:
        find_issued_certificate(session, certificate, ca=ca)
    check_certificate_time(certificate, now=now)
