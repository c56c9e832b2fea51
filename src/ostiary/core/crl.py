"""Certificate revocation lists (RFC 5280 section 5), fast enough for a million entries.

Every CRL Ostiary publishes is a complete v2 CRL (no delta CRLs) with:

- the authority key identifier of the issuing CA (keyIdentifier only, RFC 5280 5.2.1) and a
  CRL number (5.2.3), which the caller makes grow with every CRL it publishes;
- thisUpdate and nextUpdate (5.1.2.4, 5.1.2.5);
- one entry per revoked certificate: serial number, revocation date and, unless the reason is
  unknown or ``unspecified``, a non-critical reasonCode entry extension (5.3.1 recommends
  leaving out ``unspecified``). An empty list is left out entirely (5.1.2.6).

How it is built. cryptography's ``CertificateRevocationListBuilder`` needs a Python
``RevokedCertificate`` per entry: about 9 s for a million entries on the 2-core test machine,
against a target of 5 s. So the ``revokedCertificates`` list, and only that, is DER-encoded
here by :func:`_encode_entries` (about 1.6 s of CPU for the whole million-entry CRL).
asn1crypto encodes the rest of the TBSCertList, the list is spliced in between nextUpdate
and crlExtensions, and the to-be-signed bytes are signed with the issuer key object's
``sign()`` (:mod:`ostiary.core.signing`), so a key held in an HSM works too. The tests hold
the TBSCertList byte-for-byte equal to what cryptography's builder makes of the same input,
and have openssl verify the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.core import der
from ostiary.core.errors import BadRequest
from ostiary.core.signing import sign_data, signature_algorithm_der

#: RFC 5280 5.3.1 CRLReason codes (7 is unused).
REASON_CODES: Mapping[x509.ReasonFlags, int] = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}

#: Serial numbers are positive and at most 20 octets (RFC 5280 4.1.2.2); CRL numbers too
#: (5.2.3), though they may be zero.
MAX_INTEGER_OCTETS = 20


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked certificate: its serial, when it was revoked and, if known, why.

    ``revoked_at`` should be timezone-aware; a naive datetime is taken as UTC, as
    cryptography's builders do. Fractions of a second are dropped (RFC 5280 5.1.2.6).
    """

    serial_number: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None


@dataclass(frozen=True, slots=True)
class EncodedEntries:
    """The revokedCertificates list already encoded (:func:`encode_entries`): the entries'
    DER, one after the other. Lets the long part of a big CRL be made in another process.
    """

    der: bytes


def encode_entries(entries: Iterable[RevokedEntry]) -> EncodedEntries:
    """Encode and check entries as :func:`build_crl` would (same refusals)."""
    parts, _size = _encode_entries(entries)
    return EncodedEntries(b"".join(parts))


def build_crl(
    issuer_certificate: x509.Certificate,
    private_key: CertificateIssuerPrivateKeyTypes,
    entries: Iterable[RevokedEntry] | EncodedEntries,
    *,
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
) -> bytes:
    """A DER-encoded, signed v2 CRL for ``issuer_certificate`` listing ``entries`` in order
    (given as :class:`RevokedEntry` objects, or already encoded by :func:`encode_entries`).

    Refused with :class:`~ostiary.core.errors.BadRequest`: ``next_update`` not after
    ``this_update``; a CRL number that is negative or longer than 20 octets; a serial that is
    not positive, is longer than 20 octets or is listed twice; the ``removeFromCRL`` reason
    (delta CRLs only); a date before 1950; a key that does not belong to the issuer
    certificate; an issuer whose key usage leaves out cRLSign.
    """
    this_update, next_update = der.utc(this_update), der.utc(next_update)
    if next_update <= this_update:
        raise BadRequest(
            f"the CRL's next_update {next_update:%Y-%m-%d %H:%M:%SZ} must be after its "
            f"this_update {this_update:%Y-%m-%d %H:%M:%SZ}"
        )
    if this_update.year < 1950:
        raise BadRequest("a CRL's this_update before 1950 is not plausible")
    if not 0 <= crl_number < 1 << (8 * MAX_INTEGER_OCTETS - 1):
        raise BadRequest(
            "a CRL number is a non-negative integer of at most 20 octets (RFC 5280 5.2.3)",
            crl_number=crl_number,
        )
    _check_issuer(issuer_certificate, private_key)

    if isinstance(entries, EncodedEntries):
        entry_parts = [entries.der] if entries.der else []
        entries_size = len(entries.der)
    else:
        entry_parts, entries_size = _encode_entries(entries)
    algorithm = signature_algorithm_der(private_key)
    skeleton = asn1_crl.TbsCertList(
        {
            "version": "v2",
            "signature": algos.SignedDigestAlgorithm.load(algorithm),
            "issuer": asn1_x509.Name.load(issuer_certificate.subject.public_bytes()),
            "this_update": _time(this_update),
            "next_update": _time(next_update),
            "crl_extensions": [
                {
                    "extn_id": "authority_key_identifier",
                    "critical": False,
                    "extn_value": {"key_identifier": _key_identifier(issuer_certificate)},
                },
                {"extn_id": "crl_number", "critical": False, "extn_value": crl_number},
            ],
        }
    )
    tbs = _splice_entries(skeleton, entry_parts, entries_size)
    signature = sign_data(private_key, tbs)
    # CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue BIT STRING }
    bit_string = der.bit_string(signature)
    size = len(tbs) + len(algorithm) + len(bit_string)
    return b"".join((der.header(der.SEQUENCE, size), tbs, algorithm, bit_string))


def crl_is_current(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    """Whether ``now`` falls in [thisUpdate, nextUpdate); a CRL without nextUpdate never is."""
    next_update = crl.next_update_utc
    return next_update is not None and crl.last_update_utc <= der.utc(now) < next_update


def _splice_entries(skeleton: asn1_crl.TbsCertList, parts: list[bytes], size: int) -> bytes:
    """``skeleton`` (a TBSCertList without entries) with ``parts`` as revokedCertificates.

    The list goes between nextUpdate and the ``[0]`` crlExtensions, which asn1crypto encodes
    last (RFC 5280 5.1). The entries are copied once, by the final join.
    """
    extensions = bytes(skeleton["crl_extensions"].dump())
    contents = bytes(skeleton.contents)
    head = contents[: len(contents) - len(extensions)]
    if head + extensions != contents:  # pragma: no cover - asn1crypto's field order
        raise RuntimeError("asn1crypto did not encode crlExtensions last")
    # RFC 5280 5.1.2.6: when no certificate is revoked, the list is absent, not empty.
    list_header = der.header(der.SEQUENCE, size) if parts else b""
    total = len(head) + len(list_header) + size + len(extensions)
    return b"".join([der.header(der.SEQUENCE, total), head, list_header, *parts, extensions])


def _encode_entries(entries: Iterable[RevokedEntry]) -> tuple[list[bytes], int]:
    """Each entry's DER ``SEQUENCE { userCertificate, revocationDate, crlEntryExtensions }``.

    Returns the encodings and their total size. The date is UTCTime for 1950-2049 and
    GeneralizedTime from 2050, in whole seconds with a ``Z`` (RFC 5280 5.1.2.6); the reason
    is a prebuilt extension from :data:`_ENTRY_EXTENSIONS`. An entry is at most
    2 + 22 + 17 + 14 octets, so its length always fits the one-octet short form.

    This loop is the hot path of a million-entry CRL: it makes one %-format per entry and no
    other function calls that are not C.
    """
    parts: list[bytes] = []
    append = parts.append
    seen: set[int] = set()
    remember = seen.add
    two = _TWO_DIGITS
    extensions = _ENTRY_EXTENSIONS
    for entry in entries:
        serial = entry.serial_number
        size = (serial.bit_length() + 8) >> 3
        if serial <= 0 or size > MAX_INTEGER_OCTETS:
            raise BadRequest(
                f"serial number {serial} is not a positive integer of at most 20 octets",
                serial_number=serial,
            )
        if serial in seen:
            raise BadRequest(
                f"serial number {serial:x} is listed twice in one CRL", serial_number=serial
            )
        remember(serial)
        extension = extensions.get(entry.reason)
        if extension is None:
            raise _refused_reason(entry.reason, serial)
        when = entry.revoked_at
        if when.tzinfo is not UTC:
            when = der.utc(when)
        year = when.year
        if 1950 <= year < 2050:
            append(
                b"\x30%c\x02%c%b\x17\x0d%b%b%b%b%b%bZ%b"
                % (
                    17 + size + len(extension),
                    size,
                    serial.to_bytes(size, "big"),
                    two[year % 100],
                    two[when.month],
                    two[when.day],
                    two[when.hour],
                    two[when.minute],
                    two[when.second],
                    extension,
                )
            )
        elif year < 1950:
            raise BadRequest(
                f"serial number {serial:x}: a revocation date before 1950 is not plausible",
                serial_number=serial,
            )
        else:
            append(
                b"\x30%c\x02%c%b\x18\x0f%04d%b%b%b%b%bZ%b"
                % (
                    19 + size + len(extension),
                    size,
                    serial.to_bytes(size, "big"),
                    year,
                    two[when.month],
                    two[when.day],
                    two[when.hour],
                    two[when.minute],
                    two[when.second],
                    extension,
                )
            )
    return parts, sum(map(len, parts))


_TWO_DIGITS = tuple(b"%02d" % n for n in range(100))


def _reason_extension(code: int) -> bytes:
    """``Extensions`` holding one non-critical reasonCode (id-ce-cRLReasons, 2.5.29.21)."""
    value = der.tlv(der.OCTET_STRING, der.enumerated(code))
    return der.tlv(der.SEQUENCE, der.tlv(der.SEQUENCE, der.oid("2.5.29.21"), value))


#: The entry extensions for each reason; no reason and ``unspecified`` get none (RFC 5280
#: 5.3.1), and ``removeFromCRL`` is missing on purpose: it only belongs in delta CRLs.
_ENTRY_EXTENSIONS: dict[x509.ReasonFlags | None, bytes] = {
    None: b"",
    **{
        reason: b"" if reason is x509.ReasonFlags.unspecified else _reason_extension(code)
        for reason, code in REASON_CODES.items()
        if reason is not x509.ReasonFlags.remove_from_crl
    },
}


def _refused_reason(reason: object, serial: int) -> BadRequest:
    if reason is x509.ReasonFlags.remove_from_crl:
        return BadRequest(
            "the removeFromCRL reason only belongs in delta CRLs (RFC 5280 5.3.1)",
            serial_number=serial,
        )
    return BadRequest(f"{reason!r} is not a CRL reason", serial_number=serial)


def _time(when: datetime) -> asn1_x509.Time:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 5.1.2.4, 4.1.2.5)."""
    kind = "utc_time" if when.year < 2050 else "general_time"
    return asn1_x509.Time({kind: when})


def _key_identifier(certificate: x509.Certificate) -> bytes:
    """The issuer's subject key identifier, or the RFC 5280 4.2.1.2 (1) hash if it has none."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest
    return extension.value.digest


def _check_issuer(
    certificate: x509.Certificate, private_key: CertificateIssuerPrivateKeyTypes
) -> None:
    if private_key.public_key() != certificate.public_key():
        raise BadRequest("the CRL signing key does not belong to the issuer certificate")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.crl_sign:
        raise BadRequest(
            "the issuer certificate's key usage does not allow cRLSign (RFC 5280 4.2.1.3)"
        )


_NOT_ACCEPTED = frozenset({x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold})
_REASONS_BY_TEXT: dict[str, x509.ReasonFlags] = {
    flag.value.lower(): flag for flag in x509.ReasonFlags if flag not in _NOT_ACCEPTED
}


def parse_revocation_reason(text: str) -> x509.ReasonFlags:
    """An RFC 5280 reason as written: ``keyCompromise``, ``key-compromise``, ``KEY_COMPROMISE``.

    ``removeFromCRL`` (meaningful only in delta CRLs, which we do not issue) and
    ``certificateHold`` (a revocation here is final; a "hold" would never be lifted) are refused.
    """
    key = text.replace("-", "").replace("_", "").lower()
    flag = _REASONS_BY_TEXT.get(key)
    if flag is None:
        names = ", ".join(sorted(f.value for f in _REASONS_BY_TEXT.values()))
        raise BadRequest(f"unknown revocation reason {text[:64]!r}: use one of {names}")
    return flag
