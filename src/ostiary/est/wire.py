"""EST's bodies (RFC 7030 section 4, with RFC 8951's clarifications).

- Requests (``simpleenroll``, ``simplereenroll``) carry a PKCS#10 as base64 DER. RFC 8951
  says to ignore ``Content-Transfer-Encoding`` and take base64 always, with or without line
  breaks: so it is read here.
- Answers are base64 of a certs-only CMS SignedData (a "degenerate" PKCS#7, no signers),
  written with line breaks every 64 characters, as ``openssl base64`` and RFC 7030's
  examples do; ``csrattrs`` is base64 of a DER ``CsrAttrs`` (section 4.5.2).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, ClassVar

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ostiary.core.encoding import load_csr
from ostiary.core.errors import BadRequest, MalformedInput

#: ``cacerts``'s media type (section 4.1.3).
PKCS7_MIME = "application/pkcs7-mime"
#: ``simpleenroll``/``simplereenroll``'s media type (section 4.2.3).
PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
#: ``csrattrs``'s media type (section 4.5.2).
CSR_ATTRS = "application/csrattrs"
#: Longest base64 request body read (a 16384-bit RSA CSR fits).
MAX_REQUEST = 48 * 1024

#: What ``csrattrs`` asks for: a signature with SHA-256 (ecdsa-with-SHA256 names the hash
#: for EC keys, sha256WithRSAEncryption for RSA ones), and a P-256 key where the device can.
_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
_SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_SECP256R1 = "1.2.840.10045.3.1.7"


class _Attribute(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("type", core.ObjectIdentifier),
        ("values", core.SetOf, {"spec": core.Any}),
    ]


class _AttrOrOID(core.Choice):  # type: ignore[misc]
    _alternatives: ClassVar[list[tuple[Any, ...]]] = [
        ("oid", core.ObjectIdentifier),
        ("attribute", _Attribute),
    ]


class _CsrAttrs(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _AttrOrOID


def read_base64_csr(body: bytes) -> x509.CertificateSigningRequest:
    """The PKCS#10 in a base64 body; :class:`BadRequest` (400) when it is not one."""
    if not body.strip():
        raise BadRequest("the body is empty: send a base64 PKCS#10 request")
    if len(body) > MAX_REQUEST:
        raise BadRequest(f"the body is over {MAX_REQUEST} bytes")
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the body is not base64 (RFC 8951: always base64)") from None
    try:
        return load_csr(der)  # every parse error of cryptography's (one is no ValueError)
    except MalformedInput as exc:
        raise MalformedInput(f"the body is not a DER PKCS#10 request in base64: {exc}") from None


def _base64_lines(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))


def certs_only_base64(certificates: Sequence[x509.Certificate]) -> bytes:
    """Base64 of a certs-only PKCS#7 holding ``certificates``."""
    return _base64_lines(
        pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)
    )


def csr_attributes_base64() -> bytes:
    """Base64 of the ``CsrAttrs`` this CA asks for (section 4.5.2)."""
    attributes = _CsrAttrs(
        [
            _AttrOrOID("oid", core.ObjectIdentifier(_ECDSA_WITH_SHA256)),
            _AttrOrOID("oid", core.ObjectIdentifier(_SHA256_WITH_RSA)),
            _AttrOrOID(
                "attribute",
                _Attribute(
                    {
                        "type": _EC_PUBLIC_KEY,
                        "values": [core.ObjectIdentifier(_SECP256R1)],
                    }
                ),
            ),
        ]
    )
    return _base64_lines(attributes.dump())


__all__ = [
    "CSR_ATTRS",
    "PKCS7_CERTS_ONLY",
    "PKCS7_MIME",
    "certs_only_base64",
    "csr_attributes_base64",
    "read_base64_csr",
]
