"""An Apple configuration profile that makes a key on the phone and enrolls it.

The profile (a property list, Apple's "Configuration Profile Reference" and
apple/device-management ``mdm/profiles``) holds:

- ``com.apple.security.root``: our root CA, so that the phone trusts what chains to it;
- the credential: ``com.apple.security.scep`` (RSA 2048, a one-time ``Challenge``, Subject
  and SubjectAltName, ``KeyIsExtractable`` false) or, where an ACME provisioner with
  device-attest-01 exists, ``com.apple.security.acme`` (a Secure Enclave P-384 key,
  ``HardwareBound``, ``Attest``, a one-time ``ClientIdentifier``). iOS makes the key while
  the profile installs; it never leaves the phone. SCEP's ``Keysize`` defaults to 1024,
  which we refuse, so it is always set;
- optionally ``com.apple.eas.account``, an Exchange ActiveSync account whose
  ``PayloadCertificateUUID`` points at the credential, as Wi-Fi or VPN payloads added by an
  MDM can.

:func:`sign_profile` wraps it in CMS SignedData (RFC 5652) with the plist attached, as iOS
expects of a signed profile (cryptography's PKCS#7 builder, binary mode so the bytes are
signed as they are). Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ostiary.core.names import UPN_OID, decode_other_name

MOBILECONFIG_MEDIA_TYPE = "application/x-apple-aspen-config"
#: Short names Apple's Subject arrays take; other attributes go as dotted OIDs.
_SHORT_NAMES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
}
#: ``Key Usage``/``UsageFlags`` bit: digital signature (TLS client authentication).
_USAGE_SIGNING = 1


@dataclass(frozen=True)
class ScepPayload:
    """What the SCEP payload needs: where to enroll, the one-time challenge, the names."""

    url: str
    challenge: str
    ca_name: str
    subject: x509.Name
    names: tuple[x509.GeneralName, ...] = ()


@dataclass(frozen=True)
class AcmePayload:
    """What the ACME payload needs: the directory, the one-time ClientIdentifier, the names."""

    directory_url: str
    client_identifier: str
    subject: x509.Name
    names: tuple[x509.GeneralName, ...] = ()


@dataclass(frozen=True)
class PhoneProfileSpec:
    """A whole profile: who it is from, the root, one credential, an optional Exchange host."""

    identifier: str
    display_name: str
    organization: str
    root: x509.Certificate
    credential: ScepPayload | AcmePayload
    exchange_host: str | None = None
    description: str = "Installs a client certificate whose key is made on this device."
    #: Fixed for tests that compare bytes; random (uuid4) otherwise.
    uuids: tuple[str, ...] = field(default=())


def build_profile(spec: PhoneProfileSpec) -> bytes:
    """The profile as an XML property list (unsigned)."""
    uuids = iter(spec.uuids or [str(uuid.uuid4()).upper() for _ in range(4)])
    root_uuid, credential_uuid, exchange_uuid, profile_uuid = (next(uuids) for _ in range(4))
    payloads: list[dict[str, Any]] = [
        {
            "PayloadType": "com.apple.security.root",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{spec.identifier}.root",
            "PayloadUUID": root_uuid,
            "PayloadDisplayName": f"{spec.organization} root CA",
            "PayloadCertificateFileName": "root.cer",
            "PayloadContent": spec.root.public_bytes(serialization.Encoding.DER),
        },
        _credential(spec, credential_uuid),
    ]
    if spec.exchange_host is not None:
        payloads.append(_exchange(spec, exchange_uuid, credential_uuid))
    document = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": spec.identifier,
        "PayloadUUID": profile_uuid,
        "PayloadDisplayName": spec.display_name,
        "PayloadDescription": spec.description,
        "PayloadOrganization": spec.organization,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": payloads,
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=True)


def _credential(spec: PhoneProfileSpec, payload_uuid: str) -> dict[str, Any]:
    credential = spec.credential
    common = {
        "PayloadVersion": 1,
        "PayloadUUID": payload_uuid,
        "PayloadIdentifier": f"{spec.identifier}.credential",
        "PayloadDisplayName": f"{spec.organization} client certificate",
    }
    alt_names = subject_alt_name_dict(credential.names)
    if isinstance(credential, ScepPayload):
        content: dict[str, Any] = {
            "URL": credential.url,
            "Name": credential.ca_name,
            "Subject": subject_array(credential.subject),
            "Challenge": credential.challenge,
            "Keysize": 2048,
            "Key Type": "RSA",
            "Key Usage": _USAGE_SIGNING,
            "KeyIsExtractable": False,
            "Retries": 3,
            "RetryDelay": 10,
        }
        if alt_names:
            content["SubjectAltName"] = alt_names
        return {**common, "PayloadType": "com.apple.security.scep", "PayloadContent": content}
    acme: dict[str, Any] = {
        **common,
        "PayloadType": "com.apple.security.acme",
        "DirectoryURL": credential.directory_url,
        "ClientIdentifier": credential.client_identifier,
        "KeyType": "ECSECPrimeRandom",
        "KeySize": 384,
        "HardwareBound": True,
        "Attest": True,
        "Subject": subject_array(credential.subject),
        "UsageFlags": _USAGE_SIGNING,
        "ExtendedKeyUsage": [ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string],
        "KeyIsExtractable": False,
    }
    if alt_names:
        acme["SubjectAltName"] = alt_names
    return acme


def _exchange(spec: PhoneProfileSpec, payload_uuid: str, credential_uuid: str) -> dict[str, Any]:
    """``com.apple.eas.account``: the gateway authenticates the phone with the certificate."""
    names = spec.credential.names
    emails = [n.value for n in names if isinstance(n, x509.RFC822Name)]
    upns = [
        text
        for n in names
        if isinstance(n, x509.OtherName) and n.type_id == UPN_OID
        for text in [decode_other_name(n)]
        if text
    ]
    payload: dict[str, Any] = {
        "PayloadType": "com.apple.eas.account",
        "PayloadVersion": 1,
        "PayloadUUID": payload_uuid,
        "PayloadIdentifier": f"{spec.identifier}.exchange",
        "PayloadDisplayName": f"{spec.organization} mail",
        "Host": spec.exchange_host,
        "SSL": True,
        "PayloadCertificateUUID": credential_uuid,
    }
    if emails:
        payload["EmailAddress"] = emails[0]
    user = upns[0] if upns else (emails[0] if emails else None)
    if user:
        payload["UserName"] = user
    return payload


def subject_array(name: x509.Name) -> list[list[list[str]]]:
    """A subject as Apple writes it: ``[[["CN", "alice"]], [["O", "Corp"]]]``."""
    return [
        [[_SHORT_NAMES.get(a.oid, a.oid.dotted_string), str(a.value)] for a in rdn]
        for rdn in name.rdns
    ]


def subject_alt_name_dict(names: tuple[x509.GeneralName, ...]) -> dict[str, Any]:
    """SANs as Apple's ``SubjectAltName`` dictionary (one string, or a list of several)."""
    found: dict[str, list[str]] = {}
    for name in names:
        if isinstance(name, x509.RFC822Name):
            found.setdefault("rfc822Name", []).append(name.value)
        elif isinstance(name, x509.DNSName):
            found.setdefault("dNSName", []).append(name.value)
        elif isinstance(name, x509.UniformResourceIdentifier):
            found.setdefault("uniformResourceIdentifier", []).append(name.value)
        elif isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            upn = decode_other_name(name)
            if upn:
                found.setdefault("ntPrincipalName", []).append(upn)
    return {key: values[0] if len(values) == 1 else values for key, values in found.items()}


def sign_profile(
    profile: bytes,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    chain: tuple[x509.Certificate, ...] = (),
) -> bytes:
    """CMS SignedData (DER) over ``profile``, attached, signed with SHA-256 by ``key``."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(profile)
    builder = builder.add_signer(certificate, key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


__all__ = [
    "MOBILECONFIG_MEDIA_TYPE",
    "AcmePayload",
    "PhoneProfileSpec",
    "ScepPayload",
    "build_profile",
    "sign_profile",
    "subject_alt_name_dict",
    "subject_array",
]
