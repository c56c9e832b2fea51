"""The few DER building blocks (X.690) for the structures Ostiary encodes itself.

Most DER is made and read by cryptography or asn1crypto. Two hot or exacting paths are done
by hand: the entries of a large CRL (:mod:`ostiary.core.crl`), and OCSP, whose responses must
echo a request's CertID and nonce byte for byte (:mod:`ostiary.core.ocsp`); asn1crypto
parses the nonce it knows eagerly and refuses the raw nonces some clients send.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from asn1crypto import core as asn1_core

SEQUENCE = 0x30
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
ENUMERATED = 0x0A
GENERALIZED_TIME = 0x18


def header(tag: int, size: int) -> bytes:
    """A tag and a definite length in its minimal form (X.690 8.1.3, 10.1)."""
    if size < 0x80:
        return bytes((tag, size))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets


def tlv(tag: int, *contents: bytes) -> bytes:
    """One tag-length-value whose value is ``contents`` joined."""
    value = b"".join(contents)
    return header(tag, len(value)) + value


def context(number: int, *contents: bytes) -> bytes:
    """``[number] EXPLICIT``: a constructed context-specific wrapper."""
    return tlv(0xA0 | number, *contents)


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form."""
    return bytes(asn1_core.ObjectIdentifier(dotted).dump())


def enumerated(value: int) -> bytes:
    """A small non-negative ENUMERATED (status and reason codes)."""
    if not 0 <= value < 0x80:
        raise ValueError(f"ENUMERATED {value} is outside 0..127")
    return bytes((ENUMERATED, 1, value))


def bit_string(value: bytes) -> bytes:
    """A BIT STRING of whole octets (a signature)."""
    return tlv(BIT_STRING, b"\x00", value)


def utc(when: datetime) -> datetime:
    """``when`` as DER times carry it: UTC, whole seconds (RFC 5280 4.1.2.5).

    A naive datetime is taken as UTC, as cryptography's builders take it.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0)


def generalized_time(when: datetime) -> bytes:
    """GeneralizedTime ``YYYYMMDDHHMMSSZ``: UTC, no fraction (RFC 5280 4.1.2.5.2)."""
    when = utc(when)
    text = (
        f"{when.year:04d}{when.month:02d}{when.day:02d}"
        f"{when.hour:02d}{when.minute:02d}{when.second:02d}Z"
    )
    return tlv(GENERALIZED_TIME, text.encode("ascii"))


class Element(NamedTuple):
    """One TLV read from DER: its tag, its whole encoding and its contents."""

    tag: int
    encoded: bytes
    contents: bytes


def elements(data: bytes) -> list[Element]:
    """The TLVs that follow each other in ``data`` (a constructed value's contents).

    Only what this module writes is read: one-octet tags and definite lengths. Anything
    else, or a length that runs past the end, is a :class:`ValueError`.
    """
    result = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data) or data[offset] & 0x1F == 0x1F:
            raise ValueError("truncated DER, or a tag of more than one octet")
        tag, size = data[offset], data[offset + 1]
        start = offset + 2
        if size & 0x80:
            count = size & 0x7F
            if count == 0 or count > 4 or start + count > len(data):
                raise ValueError("indefinite or oversized DER length")
            size = int.from_bytes(data[start : start + count], "big")
            start += count
        end = start + size
        if end > len(data):
            raise ValueError("a DER length runs past the end of the data")
        result.append(Element(tag, data[offset:end], data[start:end]))
        offset = end
    return result
