"""tls-alpn-01 (RFC 8737; IP identifiers RFC 8738 section 6): a TLS handshake on the
validation port, ALPN ``acme-tls/1``, shows a certificate made for this challenge.

We connect to the identifier's address (through the configured resolver when set) at
``settings.tls_port`` with TLS 1.2 or later, offering only ``acme-tls/1`` and sending as SNI
the name, or for an ``ip`` identifier its reverse-DNS name (``4.3.2.1.in-addr.arpa``,
RFC 8738 section 6). The server must select ``acme-tls/1`` and present a certificate
(RFC 8737 section 3) that

- carries exactly one subjectAltName, a dNSName equal to the name or an iPAddress equal to
  the address;
- carries the id-pe-acmeIdentifier extension (1.3.6.1.5.5.7.1.31), marked critical, whose
  value is an OCTET STRING holding SHA-256 of the key authorization;
- does not carry the obsolete draft OID 1.3.6.1.5.5.7.1.30.1 (refused outright: a
  responder still speaking the old draft is answering another protocol).

The certificate is not verified against any root: it is self-signed by design. A refused
connection is a ``connection`` problem, a failed handshake ``tls``, a wrong certificate
``incorrectResponse``; each with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import ssl

from asn1crypto.core import OctetString
from cryptography import x509

from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)
from ostiary.acme.validation.keyauth import key_authorization_digest
from ostiary.acme.validation.resolver import resolve_addresses
from ostiary.tls import unverified_client_context

#: The ALPN protocol of RFC 8737 section 6.2.
ACME_TLS_ALPN = "acme-tls/1"
#: id-pe-acmeIdentifier (RFC 8737 section 6.1).
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: The draft's OID (draft-ietf-acme-tls-alpn-01..04), which RFC 8737 replaced.
OBSOLETE_ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.30.1")
#: How long we wait for the server to acknowledge our close (the verdict does not need it).
_CLOSE_TIMEOUT = 1.0


def sni_name(identifier_type: str, identifier_value: str) -> str:
    """The TLS server name: the dns name, or the reverse-DNS name of an IP (RFC 8738 s. 6)."""
    if identifier_type == "ip":
        return ipaddress.ip_address(identifier_value).reverse_pointer
    return identifier_value


async def validate_tls_alpn01(
    context: ChallengeContext, settings: ValidationSettings
) -> ValidationResult:
    """Handshake, then check the certificate; :class:`ChallengeFailed` on any miss."""
    kind, value = context.identifier_type, context.identifier_value
    if kind not in ("dns", "ip") or value.startswith("*."):
        raise ChallengeFailed(
            "rejectedIdentifier", f"tls-alpn-01 proves dns names and IP addresses, not {value!r}"
        )
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ChallengeFailed("malformed", f"{value[:64]!r} is not an IP address") from None
    address = (await resolve_addresses(value, settings))[0]
    der = await _handshake(address, settings.tls_port, sni_name(kind, value), settings.timeout)
    check_challenge_certificate(der, kind, value, context.key_authorization)
    return ValidationResult()


async def _handshake(address: str, port: int, server_name: str, timeout: float) -> bytes:
    """The DER of the certificate presented for ``server_name`` over ``acme-tls/1``."""
    where = f"{address}:{port}" if ":" not in address else f"[{address}]:{port}"
    tls = unverified_client_context([ACME_TLS_ALPN])
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, port, ssl=tls, server_hostname=server_name
            )
    except TimeoutError:
        raise ChallengeFailed(
            "connection", f"no TLS handshake with {where} within {timeout:g} s"
        ) from None
    except ssl.SSLError as exc:
        raise ChallengeFailed(
            "tls", f"the TLS handshake with {where} failed: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise ChallengeFailed(
            "connection", f"cannot connect to {where}: {exc.strerror or exc}"
        ) from None
    del reader
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        selected = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT)
    if selected != ACME_TLS_ALPN:
        raise ChallengeFailed(
            "tls", f"{where} did not select the ALPN protocol {ACME_TLS_ALPN} (RFC 8737)"
        )
    if not der:
        raise ChallengeFailed("tls", f"{where} presented no certificate")
    return bytes(der)


def check_challenge_certificate(
    der: bytes, identifier_type: str, identifier_value: str, key_authorization: str
) -> None:
    """RFC 8737 section 3's rules for the presented certificate (see the module docstring)."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        extensions = certificate.extensions
    except ValueError:
        raise ChallengeFailed(
            "incorrectResponse", "the tls-alpn-01 certificate cannot be parsed"
        ) from None
    _check_san(extensions, identifier_type, identifier_value)
    oids = {extension.oid for extension in extensions}
    if OBSOLETE_ACME_IDENTIFIER_OID in oids:
        raise ChallengeFailed(
            "incorrectResponse",
            "the tls-alpn-01 certificate uses the obsolete draft OID 1.3.6.1.5.5.7.1.30.1; "
            "RFC 8737 requires 1.3.6.1.5.5.7.1.31",
        )
    try:
        extension = extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except x509.ExtensionNotFound:
        raise ChallengeFailed(
            "incorrectResponse",
            "the tls-alpn-01 certificate lacks the acmeIdentifier extension (1.3.6.1.5.5.7.1.31)",
        ) from None
    if not extension.critical:
        raise ChallengeFailed(
            "incorrectResponse",
            "the tls-alpn-01 certificate's acmeIdentifier extension is not marked critical",
        )
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    try:
        digest = OctetString.load(raw, strict=True).native
    except (ValueError, TypeError):
        raise ChallengeFailed(
            "incorrectResponse", "the acmeIdentifier extension is not an OCTET STRING"
        ) from None
    if not hmac.compare_digest(digest or b"", key_authorization_digest(key_authorization)):
        raise ChallengeFailed(
            "incorrectResponse",
            "the acmeIdentifier extension does not hold the SHA-256 of this challenge's key "
            "authorization",
        )


def _check_san(extensions: x509.Extensions, identifier_type: str, identifier_value: str) -> None:
    try:
        names = list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        names = []
    if len(names) != 1:
        raise ChallengeFailed(
            "incorrectResponse",
            f"the tls-alpn-01 certificate must name exactly one subjectAltName, it has "
            f"{len(names)}",
        )
    name = names[0]
    if identifier_type == "ip":
        matches = isinstance(name, x509.IPAddress) and name.value == ipaddress.ip_address(
            identifier_value
        )
    else:
        matches = isinstance(name, x509.DNSName) and name.value.lower().rstrip(
            "."
        ) == identifier_value.lower().rstrip(".")
    if not matches:
        raise ChallengeFailed(
            "incorrectResponse",
            f"the tls-alpn-01 certificate names {name.value!s:.80}, not {identifier_value}",
        )


__all__ = [
    "ACME_IDENTIFIER_OID",
    "ACME_TLS_ALPN",
    "OBSOLETE_ACME_IDENTIFIER_OID",
    "check_challenge_certificate",
    "sni_name",
    "validate_tls_alpn01",
]
