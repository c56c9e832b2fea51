"""Plain descriptions of certificates, CSRs and CRLs, for ``cert inspect`` and the API.

Each ``describe_*`` returns JSON-ready dicts; the CLI renders them as text or JSON. Also the
Microsoft Entra ``certificateUserIds`` binding strings, so that an admin can paste the exact
value Entra certificate-based authentication will match.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from ostiary.core.encoding import format_serial
from ostiary.core.keys import describe_public_key
from ostiary.core.names import UPN_OID, decode_other_name, format_general_name, sans_of


def x500_order(name: x509.Name) -> str:
    """A distinguished name in X.500 order (most significant RDN first), as Entra writes it.

    RFC 4514 strings list RDNs last-first (``CN=x,DC=contoso,DC=com``); Microsoft's
    ``X509:<I>`` and ``X509:<S>`` bindings use the encoded order (``DC=com,DC=contoso,CN=x``).
    """
    return ",".join(rdn.rfc4514_string() for rdn in name.rdns)


def entra_certificate_user_ids(certificate: x509.Certificate) -> list[str]:
    """The ``certificateUserIds`` values Entra CBA can bind this certificate by.

    IssuerAndSerialNumber uses the serial's octets reversed (as ``certutil -dump`` prints it).
    """
    serial = certificate.serial_number
    # A (non-conforming) negative serial is its two's-complement octets, as encoded.
    raw = serial.to_bytes(
        ((~serial).bit_length() + 8) // 8 if serial < 0 else (serial.bit_length() + 7) // 8 or 1,
        "big",
        signed=serial < 0,
    )
    values = [f"X509:<I>{x500_order(certificate.issuer)}<SR>{raw[::-1].hex()}"]
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        values.append(f"X509:<SKI>{ski.value.digest.hex()}")
    except x509.ExtensionNotFound:
        pass
    public_der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA1())
    digest.update(public_der)
    values.append(f"X509:<SHA1-PUKEY>{digest.finalize().hex()}")
    for name in sans_of(certificate.extensions):
        if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            upn = decode_other_name(name)
            if upn:
                values.append(f"X509:<PN>{upn}")
        elif isinstance(name, x509.RFC822Name):
            values.append(f"X509:<RFC822>{name.value}")
    if len(certificate.subject):
        values.append(f"X509:<S>{x500_order(certificate.subject)}")
        values.append(
            f"X509:<I>{x500_order(certificate.issuer)}<S>{x500_order(certificate.subject)}"
        )
    return values


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _extension_summary(extension: x509.Extension[x509.ExtensionType]) -> tuple[str, Any]:
    value = extension.value
    if isinstance(value, x509.BasicConstraints):
        return "basic_constraints", {"ca": value.ca, "path_length": value.path_length}
    if isinstance(value, x509.KeyUsage):
        names = [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        ]
        return "key_usage", [n for n in names if getattr(value, n)]
    if isinstance(value, x509.ExtendedKeyUsage):
        return "extended_key_usage", [getattr(o, "_name", o.dotted_string) for o in value]
    if isinstance(value, x509.SubjectAlternativeName):
        return "san", [format_general_name(n) for n in value]
    if isinstance(value, x509.SubjectKeyIdentifier):
        return "subject_key_identifier", value.digest.hex()
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return "authority_key_identifier", (value.key_identifier or b"").hex()
    if isinstance(value, x509.CRLDistributionPoints):
        urls = [format_general_name(n) for p in value for n in (p.full_name or [])]
        return "crl_distribution_points", [u.removeprefix("uri:") for u in urls]
    if isinstance(value, x509.AuthorityInformationAccess):
        return "authority_information_access", {
            getattr(d.access_method, "_name", "other"): format_general_name(
                d.access_location
            ).removeprefix("uri:")
            for d in value
        }
    if isinstance(value, x509.CertificatePolicies):
        return "certificate_policies", [p.policy_identifier.dotted_string for p in value]
    if isinstance(value, x509.NameConstraints):
        return "name_constraints", {
            "permitted": [format_general_name(n) for n in value.permitted_subtrees or []],
            "excluded": [format_general_name(n) for n in value.excluded_subtrees or []],
        }
    if isinstance(value, x509.OCSPNoCheck):
        return "ocsp_no_check", True
    return extension.oid.dotted_string, "present"


def describe_certificate(certificate: x509.Certificate) -> dict[str, Any]:
    info: dict[str, Any] = {
        "type": "certificate",
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial_number": format_serial(certificate.serial_number),
        "not_before": _time(certificate.not_valid_before_utc),
        "not_after": _time(certificate.not_valid_after_utc),
        "public_key": describe_public_key(certificate.public_key()),
        "signature_algorithm": getattr(certificate.signature_algorithm_oid, "_name", "unknown"),
        "fingerprint_sha256": certificate.fingerprint(hashes.SHA256()).hex(),
    }
    extensions: dict[str, Any] = {}
    for extension in certificate.extensions:
        key, value = _extension_summary(extension)
        extensions[key] = value
    info["extensions"] = extensions
    is_ca = extensions.get("basic_constraints", {}).get("ca", False)
    if not is_ca:
        info["entra_certificate_user_ids"] = entra_certificate_user_ids(certificate)
    return info


def describe_csr(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    try:
        sans = [format_general_name(n) for n in sans_of(csr.extensions)]
    except ValueError:
        sans = []
    try:
        signature_valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):  # a key that cannot be read verifies nothing
        signature_valid = False
    return {
        "type": "csr",
        "subject": csr.subject.rfc4514_string(),
        "public_key": _key_description(csr),
        "san": sans,
        "signature_valid": signature_valid,
    }


def _key_description(csr: x509.CertificateSigningRequest) -> str:
    """The key's description, or why it cannot be read (an unknown curve, a point off it):
    the CSR is still worth describing, if only to see why it will be refused.
    """
    try:
        return describe_public_key(csr.public_key())
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"unreadable ({exc})"


def describe_crl(crl: x509.CertificateRevocationList) -> dict[str, Any]:
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    entries = []
    for revoked in crl:
        try:
            reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except x509.ExtensionNotFound:
            reason = "unspecified"
        entries.append(
            {
                "serial_number": format_serial(revoked.serial_number),
                "revoked_at": _time(revoked.revocation_date_utc),
                "reason": reason,
            }
        )
    next_update = crl.next_update_utc
    return {
        "type": "crl",
        "issuer": crl.issuer.rfc4514_string(),
        "crl_number": number,
        "this_update": _time(crl.last_update_utc),
        "next_update": _time(next_update) if next_update else None,
        "revoked": entries,
    }
