"""The ``apple`` format of device-attest-01: Apple's Managed Device Attestation.

An Apple device with an ACME payload whose ``Attest`` is true answers the challenge with
``attStmt.x5c = [leaf, intermediate]``, issued by Apple for the key it made in its Secure
Enclave. We check that

- the chain verifies to the Apple Enterprise Attestation Root CA (pinned here; a
  provisioner's ``attestation_roots`` replace it);
- the leaf carries the freshness code (OID 1.2.840.113635.100.8.11.1) and that it equals
  SHA-256 of the challenge's *token*. The code is REQUIRED: step-ca checks it only when
  present, which lets an attestation obtained for another order be replayed. Apple defines
  its value as "the SHA-256 hash of the token from the device-attest-01 challenge" (Apple's
  ``ACMECredential`` documentation, "Discussion"), which is also what step-ca compares,
  against real devices; so the token, not the key authorization, is hashed. As step-ca
  reads it, the extension's value is the 32 digest bytes themselves;
- the identifier equals the device's serial number (…8.9.1) or UDID (…8.9.2) from the leaf,
  unless ``policy["issued_client_identifier"]`` is true: the order state machine sets it when
  the identifier is a one-time ClientIdentifier that Ostiary handed out (and spends it);
- the attested key is the leaf's public key, held in the Secure Enclave.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed, ValidationResult
from ostiary.core.errors import BadRequest, Unauthorized
from ostiary.provisioners.tpm_statement import verify_attestation_chain

BAD_ATTESTATION = "badAttestationStatement"
#: Apple's leaf extensions (Apple Platform Deployment, "Managed Device Attestation").
APPLE_SERIAL_NUMBER_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.9.1")
APPLE_UDID_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.9.2")
APPLE_FRESHNESS_CODE_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.11.1")

#: Apple Enterprise Attestation Root CA (https://www.apple.com/certificateauthority/private/),
#: P-384, serial 42c0c2bb2c727c5c5eabf6f1a66f1fac5d798737, valid 2022-02-16 to 2047-02-20,
#: SHA-256 fingerprint cc:f5:9e:f8:fc:b3:01:7d:97:f8:b5:fa:6f:a9:0e:7a:
#: 3f:92:83:f7:6b:55:ac:6c:f6:ed:a8:b8:b9:49:f0:5b (tests/acme_validation checks it).
APPLE_ENTERPRISE_ATTESTATION_ROOT_PEM = b"""-----BEGIN CERTIFICATE-----
MIICJDCCAamgAwIBAgIUQsDCuyxyfFxeq/bxpm8frF15hzcwCgYIKoZIzj0EAwMw
UTEtMCsGA1UEAwwkQXBwbGUgRW50ZXJwcmlzZSBBdHRlc3RhdGlvbiBSb290IENB
MRMwEQYDVQQKDApBcHBsZSBJbmMuMQswCQYDVQQGEwJVUzAeFw0yMjAyMTYxOTAx
MjRaFw00NzAyMjAwMDAwMDBaMFExLTArBgNVBAMMJEFwcGxlIEVudGVycHJpc2Ug
QXR0ZXN0YXRpb24gUm9vdCBDQTETMBEGA1UECgwKQXBwbGUgSW5jLjELMAkGA1UE
BhMCVVMwdjAQBgcqhkjOPQIBBgUrgQQAIgNiAAT6Jigq+Ps9Q4CoT8t8q+UnOe2p
oT9nRaUfGhBTbgvqSGXPjVkbYlIWYO+1zPk2Sz9hQ5ozzmLrPmTBgEWRcHjA2/y7
7GEicps9wn2tj+G89l3INNDKETdxSPPIZpPj8VmjQjBAMA8GA1UdEwEB/wQFMAMB
Af8wHQYDVR0OBBYEFPNqTQGd8muBpV5du+UIbVbi+d66MA4GA1UdDwEB/wQEAwIB
BjAKBggqhkjOPQQDAwNpADBmAjEA1xpWmTLSpr1VH4f8Ypk8f3jMUKYz4QPG8mL5
8m9sX/b2+eXpTv2pH4RZgJjucnbcAjEA4ZSB6S45FlPuS/u4pTnzoz632rA+xW/T
ZwFEh9bhKjJ+5VQ9/Do1os0u3LEkgN/r
-----END CERTIFICATE-----
"""


def apple_enterprise_attestation_root() -> x509.Certificate:
    """The pinned Apple Enterprise Attestation Root CA."""
    return x509.load_pem_x509_certificate(APPLE_ENTERPRISE_ATTESTATION_ROOT_PEM)


def verify_apple_statement(
    context: ChallengeContext,
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate] | None,
    *,
    now: datetime,
) -> ValidationResult:
    """The checks of the module docstring; :class:`ChallengeFailed` on any miss."""
    if not chain:
        raise ChallengeFailed(
            BAD_ATTESTATION,
            "the Apple attestation carries no certificates (x5c): the device did not attest "
            "its key (the ACME payload needs Attest and HardwareBound set)",
        )
    anchors = list(roots) if roots else [apple_enterprise_attestation_root()]
    try:
        leaf = verify_attestation_chain(
            chain, anchors, now=now, roots_of="Apple (or the configured attestation roots)"
        )
    except (BadRequest, Unauthorized) as exc:
        raise ChallengeFailed(BAD_ATTESTATION, str(exc)) from None
    freshness = _extension_bytes(leaf, APPLE_FRESHNESS_CODE_OID)
    if freshness is None:
        raise ChallengeFailed(
            BAD_ATTESTATION,
            "the Apple attestation has no freshness code (1.2.840.113635.100.8.11.1): it "
            "could have been made for another order",
        )
    expected = hashlib.sha256(context.token.encode("ascii")).digest()
    if not hmac.compare_digest(freshness, expected):
        raise ChallengeFailed(
            BAD_ATTESTATION,
            "the Apple attestation's freshness code is not SHA-256 of this challenge's token",
        )
    if not context.policy.get("issued_client_identifier"):
        _check_device_identifier(leaf, context.identifier_value)
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ValidationResult(attested_spki_der=spki, hardware_key=True)


def _check_device_identifier(leaf: x509.Certificate, identifier: str) -> None:
    wanted = identifier.encode("utf-8")
    for oid in (APPLE_SERIAL_NUMBER_OID, APPLE_UDID_OID):
        value = _extension_bytes(leaf, oid)
        if value is not None and hmac.compare_digest(value, wanted):
            return
    raise ChallengeFailed(
        BAD_ATTESTATION,
        f"the identifier {identifier[:64]!r} is neither the serial number nor the UDID that "
        "Apple attested for this device",
    )


def _extension_bytes(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = certificate.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


__all__ = [
    "APPLE_ENTERPRISE_ATTESTATION_ROOT_PEM",
    "APPLE_FRESHNESS_CODE_OID",
    "APPLE_SERIAL_NUMBER_OID",
    "APPLE_UDID_OID",
    "apple_enterprise_attestation_root",
    "verify_apple_statement",
]
