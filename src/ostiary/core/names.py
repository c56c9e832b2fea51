"""Names in certificates: subjects, and subject alternative names typed by people.

``parse_san("alice@example.com")`` returns an RFC822Name, ``parse_san("10.0.0.1")`` an
IPAddress, and so on; a prefix (``dns:``, ``email:``, ``ip:``, ``uri:``, ``upn:``,
``pid:``) forces the type. Every name is validated: a malformed name is
:class:`~ostiary.core.errors.InvalidName`, never a silently odd certificate.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from asn1crypto import core as asn1
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ostiary.core.errors import InvalidName

#: Microsoft User Principal Name otherName (used by Windows logon and Entra CBA).
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
#: RFC 4043 permanent identifier otherName (a device's serial number, say).
PERMANENT_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.8.3")
#: RFC 4108 section 5: id-on-hardwareModuleName, the otherName naming a hardware module.
HARDWARE_MODULE_NAME_OID = ObjectIdentifier("1.3.6.1.5.5.7.8.4")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+$")
_PREFIXES = ("dns", "email", "ip", "uri", "upn", "pid")


class _PermanentIdentifier(asn1.Sequence):  # type: ignore[misc]
    """RFC 4043 section 2: ``PermanentIdentifier ::= SEQUENCE { identifierValue, assigner }``."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("identifier_value", asn1.UTF8String, {"optional": True}),
        ("assigner", asn1.ObjectIdentifier, {"optional": True}),
    ]


class _HardwareModuleName(asn1.Sequence):  # type: ignore[misc]
    """RFC 4108 section 5: ``HardwareModuleName ::= SEQUENCE { hwType, hwSerialNum }``."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("hw_type", asn1.ObjectIdentifier),
        ("hw_serial_num", asn1.OctetString),
    ]


def hardware_module_name(hw_type: str, serial: bytes) -> x509.OtherName:
    """An RFC 4108 hardwareModuleName otherName: the module's type (an OID) and serial."""
    fields = {"hw_type": hw_type, "hw_serial_num": serial}
    return x509.OtherName(HARDWARE_MODULE_NAME_OID, _HardwareModuleName(fields).dump())


def hardware_module_serial(name: x509.OtherName) -> bytes | None:
    """The ``hwSerialNum`` of a hardwareModuleName otherName; ``None`` for other kinds or
    one that does not parse.
    """
    if name.type_id != HARDWARE_MODULE_NAME_OID:
        return None
    try:
        parsed = _HardwareModuleName.load(name.value)
        return bytes(parsed["hw_serial_num"].native)
    except (ValueError, TypeError):
        return None


def validate_dns_name(name: str, *, allow_wildcard: bool = True) -> str:
    """A DNS name in lower case, LDH labels only; a wildcard only as the whole leftmost label."""
    try:
        text = name.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidName(f"not a valid DNS name: {name!r}", name=name) from None
    if not text or len(text) > 253:
        raise InvalidName(f"not a valid DNS name: {name!r}", name=name)
    labels = text.split(".")
    if allow_wildcard and labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not all(_LABEL.match(label) for label in labels):
        raise InvalidName(f"not a valid DNS name: {name!r}", name=name)
    return text


def validate_email(address: str) -> str:
    """An e-mail address ``local@domain`` with a valid DNS domain (the domain lower-cased)."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not _LOCAL_PART.match(local) or ".." in local:
        raise InvalidName(f"not a valid e-mail address: {address!r}", name=address)
    try:
        return f"{local}@{validate_dns_name(domain, allow_wildcard=False)}"
    except InvalidName:
        raise InvalidName(f"not a valid e-mail address: {address!r}", name=address) from None


def upn_name(upn: str) -> x509.OtherName:
    """The UPN otherName for ``user@domain`` (UTF8String, as Windows and Entra expect)."""
    validate_email(upn)
    return x509.OtherName(UPN_OID, asn1.UTF8String(upn.strip()).dump())


def permanent_identifier_name(value: str, assigner: str | None = None) -> x509.OtherName:
    """An RFC 4043 permanentIdentifier otherName, e.g. a device serial number."""
    if not value or len(value) > 255:
        raise InvalidName(f"not a valid permanent identifier: {value!r}")
    fields: dict[str, object] = {"identifier_value": value}
    if assigner:
        fields["assigner"] = assigner
    return x509.OtherName(PERMANENT_IDENTIFIER_OID, _PermanentIdentifier(fields).dump())


def parse_san(value: str) -> x509.GeneralName:
    """One subject alternative name from text, its type detected or given by a prefix."""
    text = value.strip()
    prefix, colon, rest = text.partition(":")
    kind = (
        prefix.lower()
        if colon and prefix.lower() in _PREFIXES and not rest.startswith("//")
        else ""
    )
    if kind:
        text = rest.strip()
    elif "://" in text or text.startswith("urn:"):
        kind = "uri"
    elif "@" in text:
        kind = "email"
    else:
        try:
            ipaddress.ip_address(text)
            kind = "ip"
        except ValueError:
            kind = "dns"
    if kind == "ip":
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            raise InvalidName(f"not a valid IP address: {text!r}", name=text) from None
    if kind == "email":
        return x509.RFC822Name(validate_email(text))
    if kind == "uri":
        if not _URI.match(text):
            raise InvalidName(f"not a valid URI: {text!r}", name=text)
        return x509.UniformResourceIdentifier(text)
    if kind == "upn":
        return upn_name(text)
    if kind == "pid":
        return permanent_identifier_name(text)
    return x509.DNSName(validate_dns_name(text))


def decode_other_name(name: x509.OtherName) -> str | None:
    """The text of a UPN or permanent-identifier otherName, ``None`` for other kinds."""
    try:
        if name.type_id == UPN_OID:
            return str(asn1.UTF8String.load(name.value).native)
        if name.type_id == PERMANENT_IDENTIFIER_OID:
            parsed = _PermanentIdentifier.load(name.value)
            return str(parsed["identifier_value"].native)
    except (ValueError, TypeError):
        return None
    return None


def format_general_name(name: x509.GeneralName) -> str:
    """A SAN as ``kind:value`` text (``dns:``, ``email:``, ``ip:``, ``uri:``, ``upn:``, ``pid:``).

    This is the one textual form used in the store, the API, tokens and ``cert inspect``, and
    :func:`parse_san` reads it back.
    """
    if isinstance(name, x509.DNSName):
        return f"dns:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"ip:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"uri:{name.value}"
    if isinstance(name, x509.OtherName):
        decoded = decode_other_name(name)
        if name.type_id == UPN_OID and decoded is not None:
            return f"upn:{decoded}"
        if name.type_id == PERMANENT_IDENTIFIER_OID and decoded is not None:
            return f"pid:{decoded}"
        return f"othername:{name.type_id.dotted_string}:{name.value.hex()}"
    if isinstance(name, x509.DirectoryName):
        return f"dirname:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"rid:{name.value.dotted_string}"
    return f"unknown:{name!r}"


def parse_subject(value: str) -> x509.Name:
    """A subject from ``CN=x,O=y`` (RFC 4514) or, without ``=``, a bare common name."""
    text = value.strip()
    if not text:
        raise InvalidName("the subject is empty")
    if "=" not in text:
        try:  # cryptography bounds the UTF-8 bytes, which 64 characters can pass
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])
        except ValueError:
            raise InvalidName(
                "a common name is at most 64 characters (RFC 5280 upper bound; a non-ASCII "
                "character counts as its UTF-8 bytes)"
            ) from None
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise InvalidName(f"not a valid subject {value!r}: {exc}") from None


def common_name(name: x509.Name) -> str | None:
    """The one common name of ``name``, or ``None``.

    A name with several common names, or with a multi-valued RDN, is
    :class:`~ostiary.core.errors.InvalidName`: relying parties disagree on which CN is "the"
    one (OpenSSL's users take the first, others the last), so a certificate with two is two
    identities at once. Nothing we issue has two; nothing we read is trusted if it has.
    """
    _check_single_valued(name)
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) > 1:
        raise InvalidName(
            "a subject has at most one common name (CN); put further names in the "
            "subject alternative names",
            subject=_subject_text(name),
        )
    return str(values[0].value) if values else None


#: Subject attributes a certificate may carry, with their RFC 5280 upper bounds (Appendix A).
_SUBJECT_ATTRIBUTES: dict[ObjectIdentifier, tuple[str, int]] = {
    NameOID.COMMON_NAME: ("CN", 64),
    NameOID.ORGANIZATION_NAME: ("O", 64),
    NameOID.ORGANIZATIONAL_UNIT_NAME: ("OU", 64),
    NameOID.LOCALITY_NAME: ("L", 128),
    NameOID.STATE_OR_PROVINCE_NAME: ("ST", 128),
    NameOID.COUNTRY_NAME: ("C", 2),
    NameOID.SERIAL_NUMBER: ("serialNumber", 64),
}


def check_subject(name: x509.Name) -> x509.Name:
    """``name`` if a certificate may carry it as its subject, else :class:`InvalidName`.

    At most one common name, no multi-valued RDN, no two attributes of one type, only the
    attributes of :data:`_SUBJECT_ATTRIBUTES`, and values within their bounds without control
    or format characters (a NUL or a bidi override makes one name read as another).
    """
    common_name(name)
    seen: set[ObjectIdentifier] = set()
    for attribute in name:
        known = _SUBJECT_ATTRIBUTES.get(attribute.oid)
        if known is None:
            raise InvalidName(
                f"a subject may not carry the attribute {attribute.oid.dotted_string}",
                subject=_subject_text(name),
            )
        label, bound = known
        if attribute.oid in seen:
            raise InvalidName(
                f"a subject carries {label} at most once", subject=_subject_text(name)
            )
        seen.add(attribute.oid)
        value = attribute.value
        if not isinstance(value, str) or not value.strip() or len(value) > bound:
            raise InvalidName(
                f"the subject's {label} must be 1-{bound} characters", subject=_subject_text(name)
            )
        if not _is_clean(value):
            raise InvalidName(
                f"the subject's {label} contains a control or format character",
                subject=_subject_text(name),
            )
    return name


def requested_subject(name: x509.Name) -> x509.Name:
    """The subject a requester may choose in a CSR: one common name and nothing else.

    Approval and an OIDC admin's CSR take the subject from the request. Other attributes
    (O, OU, a second CN) would be names nobody authorized: refused, not silently dropped, so
    the requester learns what to send. The result is built anew, as ``CN=<value>``.
    """
    cn = common_name(name)
    if len(name) != (0 if cn is None else 1):
        raise InvalidName(
            "a request's subject is one common name (CN=...) and nothing else; put other "
            "names in the subject alternative names",
            subject=_subject_text(name),
        )
    if cn is None:
        return x509.Name([])
    return check_subject(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))


def canonical_general_name(name: x509.GeneralName) -> x509.GeneralName:
    r"""The canonical form of a SAN, as :func:`parse_san` makes it; :class:`InvalidName` if none.

    A SAN read from a CSR is raw: a DNS name may hold a NUL, a space or a slash
    (``evil.example\0.door.example``), an e-mail a second ``@``. Every SAN a certificate
    carries passes through here, so it is exactly one that a token could have named.
    Directory names, registered ids and other otherNames are refused.
    """
    if isinstance(name, x509.IPAddress):
        return name
    if isinstance(name, x509.OtherName) and name.type_id == PERMANENT_IDENTIFIER_OID:
        value = decode_other_name(name)
        if value is None or not value or len(value) > 255 or not _is_clean(value):
            raise InvalidName("not a valid permanent identifier", name="pid")
        return name
    text = format_general_name(name)
    kind = text.partition(":")[0]
    if kind not in ("dns", "email", "uri", "upn") or not _is_clean(text):
        raise InvalidName(f"not an allowed subject alternative name: {text[:80]!r}", name=text)
    parsed = parse_san(text)
    if format_general_name(parsed).lower() != text.lower():
        raise InvalidName(f"not a valid subject alternative name: {text[:80]!r}", name=text)
    return parsed


def _check_single_valued(name: x509.Name) -> None:
    if any(len(rdn) > 1 for rdn in name.rdns):
        raise InvalidName(
            "a subject may not have multi-valued RDNs (A=x+B=y): send one common name "
            "(CN=...) and put other names in the subject alternative names",
            subject=_subject_text(name),
        )


def _is_clean(text: str) -> bool:
    """No control, format, surrogate, private-use or unassigned character."""
    return not any(unicodedata.category(c).startswith("C") for c in text)


def _subject_text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()[:200]
    except ValueError:
        return "?"


def sans_of(extensions: x509.Extensions) -> list[x509.GeneralName]:
    """The subject alternative names in ``extensions`` (empty when there are none)."""
    try:
        return list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
