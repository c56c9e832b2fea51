"""The few DER encodings a CertRep is made of, written directly (X.690 §8, §10).

A CertRep is a fixed shape (SignedData around an EnvelopedData) whose variable parts are
byte strings, a handful of OIDs and small integers. Built as asn1crypto objects it cost
about 2 ms of Python per answer, more than the RA's RSA signature; written here as
tag-length-value it costs tens of microseconds. The output is the same DER asn1crypto
wrote (``tests/scep/test_scep_der.py`` parses every CertRep shape back with asn1crypto and
checks that it re-encodes to the same bytes). bench/scep_lean.py, the SCEP bench's client,
writes its PKCSReq with them too (:func:`signed_data`, and the CertRep's envelope).

Certificates' names and serial numbers are copied as they were received
(:func:`issuer_and_serial_number`), never re-encoded: a client finds its certificate by
comparing those bytes.
"""

from __future__ import annotations

from asn1crypto import core, parser
from cryptography import x509

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = b"\x05\x00"
PRINTABLE_STRING = 0x13
UTF8_STRING = 0x0C
#: ``[0]`` constructed: EXPLICIT tags, and IMPLICIT SET OF / SEQUENCE OF.
CONTEXT_0 = 0xA0


def tlv(tag: int, *contents: bytes) -> bytes:
    """One DER element: ``tag``, the definite length of the joined ``contents``, them."""
    body = b"".join(contents)
    length = len(body)
    if length < 0x80:
        return bytes((tag, length)) + body
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + body


def set_of(*members: bytes) -> bytes:
    """A SET OF, its members' encodings in ascending order (X.690 §11.6)."""
    return tlv(SET, *sorted(members))


def small_integer(value: int) -> bytes:
    """An INTEGER from 0 to 127 (the versions of CMS structures)."""
    if not 0 <= value < 0x80:
        raise ValueError("only versions 0 to 127 are written here")
    return bytes((INTEGER, 1, value))


def oid(dotted: str) -> bytes:
    """The DER OBJECT IDENTIFIER for ``dotted`` (made once per constant, at import)."""
    return bytes(core.ObjectIdentifier(dotted).dump())


def algorithm(identifier: bytes) -> bytes:
    """An AlgorithmIdentifier with NULL parameters (digests, rsaEncryption), as asn1crypto
    writes them.
    """
    return tlv(SEQUENCE, identifier, NULL)


def issuer_and_serial_number(certificate: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber (RFC 5652 §10.2.4) with the certificate's own bytes."""
    tbs = certificate.tbs_certificate_bytes
    _, _, _, _, contents, _ = parser.parse(tbs)
    parts: list[bytes] = []
    pointer = 0
    while len(parts) < 3:
        class_, _, tag, header, inner, trailer = parser.parse(contents[pointer:])
        pointer += len(header) + len(inner) + len(trailer)
        if not parts and class_ == 2 and tag == 0:
            continue  # the [0] version of a v3 certificate
        parts.append(header + inner + trailer)
    serial, _signature, issuer = parts
    return tlv(SEQUENCE, issuer, serial)


#: The content types of a pkiMessage (RFC 5652 4, 5).
DATA = oid("1.2.840.113549.1.7.1")
SIGNED_DATA = oid("1.2.840.113549.1.7.2")


def signed_data(
    content: bytes,
    signed_attributes: bytes,
    signature: bytes,
    *,
    sid: bytes,
    certificates: bytes,
    digest_algorithm: bytes,
    signature_algorithm: bytes,
) -> bytes:
    """A ContentInfo holding a SignedData (RFC 5652 §5) of ``content`` (type data) with one
    signer: ``sid`` its IssuerAndSerialNumber, ``signed_attributes`` the DER SET OF that
    ``signature`` covers, ``certificates`` the ``[0] IMPLICIT`` CertificateSet (or b"").
    """
    signer = tlv(
        SEQUENCE,
        small_integer(1),
        sid,
        digest_algorithm,
        # signedAttrs [0] IMPLICIT: the SET's tag byte becomes [0] (RFC 5652 §5.3)
        bytes((CONTEXT_0,)) + signed_attributes[1:],
        signature_algorithm,
        tlv(OCTET_STRING, signature),
    )
    signed = tlv(
        SEQUENCE,
        small_integer(1),
        set_of(digest_algorithm),
        tlv(SEQUENCE, DATA, tlv(CONTEXT_0, tlv(OCTET_STRING, content))),
        certificates,
        set_of(signer),
    )
    return tlv(SEQUENCE, SIGNED_DATA, tlv(CONTEXT_0, signed))


__all__ = [
    "CONTEXT_0",
    "DATA",
    "INTEGER",
    "NULL",
    "OCTET_STRING",
    "PRINTABLE_STRING",
    "SEQUENCE",
    "SET",
    "SIGNED_DATA",
    "UTF8_STRING",
    "algorithm",
    "issuer_and_serial_number",
    "oid",
    "set_of",
    "signed_data",
    "small_integer",
    "tlv",
]
