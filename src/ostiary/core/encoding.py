"""Loading and dumping X.509 objects in PEM or DER, with errors a person can read.

The loaders accept PEM or DER (sniffed), and turn every parse failure into
:class:`~ostiary.core.errors.MalformedInput` naming what was expected. cryptography parses
names, extensions and keys only when first asked; the loaders ask at once, so that a loaded
object can be read in full (a CSR's key is left to ``verify_csr``, which names it).
"""

from __future__ import annotations

import base64
import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ostiary.core.errors import MalformedInput

#: What cryptography raises for bytes that are not an object, or for a part of one that it
#: parses on first use.
_PARSE_ERRORS = (
    ValueError,
    TypeError,  # a name attribute of a type its OID does not allow (a BIT STRING CN)
    x509.InvalidVersion,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


def is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data[:4096] or data.lstrip().startswith(b"-----BEGIN ")


def pem_labels(data: bytes) -> list[str]:
    """The labels of the PEM blocks in ``data`` (``CERTIFICATE``, ``CERTIFICATE REQUEST``...)."""
    return [m.group(1).decode("ascii") for m in _PEM_BLOCK.finditer(data)]


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER; :class:`MalformedInput` if it is neither."""
    try:
        csr = x509.load_pem_x509_csr(data) if is_pem(data) else x509.load_der_x509_csr(data)
        csr.subject, csr.extensions  # noqa: B018 - parsed now, see the module docstring
        return csr
    except _PARSE_ERRORS as exc:
        raise MalformedInput(f"not a certificate signing request (PKCS#10): {exc}") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """The first certificate in PEM or DER ``data``."""
    try:
        if is_pem(data):
            return _read_in_full(x509.load_pem_x509_certificate(data))
        return _read_in_full(x509.load_der_x509_certificate(data))
    except _PARSE_ERRORS as exc:
        raise MalformedInput(f"not an X.509 certificate: {exc}") from None


def load_certificate_chain(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (or the one in DER), in file order; at least one."""
    try:
        if is_pem(data):
            chain = x509.load_pem_x509_certificates(data)
        else:
            chain = [x509.load_der_x509_certificate(data)]
        for certificate in chain:
            _read_in_full(certificate)
    except _PARSE_ERRORS as exc:
        raise MalformedInput(f"not an X.509 certificate or chain: {exc}") from None
    if not chain:
        raise MalformedInput("no certificate found")
    return chain


def _read_in_full(certificate: x509.Certificate) -> x509.Certificate:
    certificate.subject, certificate.issuer, certificate.extensions  # noqa: B018
    certificate.public_key()
    return certificate


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if is_pem(data):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise MalformedInput(f"not a certificate revocation list: {exc}") from None


def dump_certificate_chain_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def format_serial(serial_number: int) -> str:
    """Serial as colon-separated upper-case hex octets, the way openssl prints it; a
    negative one (RFC 5280 forbids it, files carry it) as its DER two's complement.
    """
    raw = serial_number.to_bytes((serial_number.bit_length() + 8) // 8 or 1, "big", signed=True)
    return ":".join(f"{b:02X}" for b in raw)


def serial_hex(serial_number: int) -> str:
    """Serial as plain lower-case hex (the API and database form)."""
    return f"{serial_number:x}"


def ari_cert_id(key_identifier: bytes, serial_number: int) -> str:
    """The RFC 9773 (ACME renewal information) certID of a certificate, section 4.1.

    base64url of the authority key identifier's keyIdentifier, ``.``, base64url of the
    serial's DER INTEGER content octets (a leading zero when the high bit is set), unpadded.
    """
    octets = serial_number.to_bytes(serial_number.bit_length() // 8 + 1, "big")
    parts = (base64.urlsafe_b64encode(part).rstrip(b"=") for part in (key_identifier, octets))
    return b".".join(parts).decode("ascii")


def parse_serial(value: str) -> int:
    """A serial number as people type it: hex with optional colons/spaces and ``0x``."""
    text = value.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    if not text or not re.fullmatch(r"[0-9a-f]+", text):
        raise MalformedInput(f"not a serial number: {value!r} (expected hex, colons optional)")
    return int(text, 16)


def decode_base64_field(value: object, label: str, *, max_length: int) -> bytes:
    """The bytes of a JSON field holding standard base64; :class:`MalformedInput`, naming the
    field as ``label``, if it is missing, not a string, longer than ``max_length`` characters,
    not base64 or empty.
    """
    if not isinstance(value, str) or len(value) > max_length:
        raise MalformedInput(f"{label} is missing or too long")
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        raise MalformedInput(f"{label} is not base64") from None
    if not data:
        raise MalformedInput(f"{label} is empty")
    return data
