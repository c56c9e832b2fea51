"""Loading and dumping X.509 objects in PEM or DER, with errors a person can read.

The loaders accept PEM or DER (sniffed), and turn every parse failure into
:class:`~ostiary.core.errors.MalformedInput` naming what was expected.
"""

from __future__ import annotations

import base64
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.core.errors import MalformedInput

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


def is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data[:4096] or data.lstrip().startswith(b"-----BEGIN ")


def pem_labels(data: bytes) -> list[str]:
    """The labels of the PEM blocks in ``data`` (``CERTIFICATE``, ``CERTIFICATE REQUEST``...)."""
    return [m.group(1).decode("ascii") for m in _PEM_BLOCK.finditer(data)]


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER; :class:`MalformedInput` if it is neither."""
    try:
        if is_pem(data):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise MalformedInput(f"not a certificate signing request (PKCS#10): {exc}") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """The first certificate in PEM or DER ``data``."""
    try:
        if is_pem(data):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise MalformedInput(f"not an X.509 certificate: {exc}") from None


def load_certificate_chain(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (or the one in DER), in file order; at least one."""
    try:
        if is_pem(data):
            chain = x509.load_pem_x509_certificates(data)
        else:
            chain = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise MalformedInput(f"not an X.509 certificate or chain: {exc}") from None
    if not chain:
        raise MalformedInput("no certificate found")
    return chain


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
    """Serial as colon-separated upper-case hex octets, the way openssl prints it."""
    raw = serial_number.to_bytes((serial_number.bit_length() + 8) // 8 or 1, "big")
    return ":".join(f"{b:02X}" for b in raw)


def serial_hex(serial_number: int) -> str:
    """Serial as plain lower-case hex (the API and database form)."""
    return f"{serial_number:x}"


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
