"""Names in certificates: subjects, and subject alternative names typed by people.

``parse_san("alice@example.com")`` returns an RFC822Name, ``parse_san("10.0.0.1")`` an
IPAddress, and so on; a prefix (``dns:``, ``email:``, ``ip:``, ``uri:``, ``upn:``,
``pid:``) forces the type. Every name is validated: a malformed name is
:class:`~ostiary.core.errors.InvalidName`, never a silently odd certificate.
"""

from __future__ import annotations

import ipaddress
import re

from asn1crypto import core as asn1
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ostiary.core.errors import InvalidName

#: Microsoft User Principal Name otherName (used by Windows logon and Entra CBA).
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
#: RFC 4043 permanent identifier otherName (a device's serial number, say).
PERMANENT_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.8.3")

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
        if len(text) > 64:
            raise InvalidName("a common name is at most 64 characters (RFC 5280 upper bound)")
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise InvalidName(f"not a valid subject {value!r}: {exc}") from None


def common_name(name: x509.Name) -> str | None:
    """The last common name of ``name`` (the most specific), or ``None``."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[-1].value) if values else None


def sans_of(extensions: x509.Extensions) -> list[x509.GeneralName]:
    """The subject alternative names in ``extensions`` (empty when there are none)."""
    try:
        return list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
