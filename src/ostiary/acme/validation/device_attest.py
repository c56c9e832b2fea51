"""device-attest-01 (draft-ietf-acme-device-attest): the device attests the key it will
certify, and its identity, with its hardware's attestation.

The client POSTs ``{"attObj": base64url(CBOR {"fmt", "attStmt"})}`` to the challenge URL (a
WebAuthn attestation object without ``authData``). The formats a provisioner takes are
``policy["attestation_formats"]`` (a list of names; both ``tpm`` and ``apple`` when absent);
its trust anchors are ``policy["attestation_roots"]``, a list of
:class:`cryptography.x509.Certificate` (the provisioner loads its PEM bundle once). The
``apple`` format trusts Apple's root unless roots are configured; ``tpm`` needs them.

``tpm`` (WebAuthn section 8.3 statement, checks shared with the ``attest`` provisioner in
:mod:`ostiary.provisioners.tpm_statement`):

1. ``ver`` is ``"2.0"``, ``alg`` ES256 (-7) or RS256 (-257) and matches the AK's key;
2. the ``x5c`` AK chain verifies to the roots; the AK certificate is v3, not a CA, with the
   tcg-kp-AIKCertificate usage;
3. ``certInfo`` is a TPM-made TPM2_Certify statement signed by the AK (``sig``), over
   ``extraData`` = SHA-256(key authorization), naming the key of ``pubArea``;
4. that key is ``fixedTPM``, ``fixedParent``, ``sensitiveDataOrigin`` and not ``restricted``;
5. the identifier is a permanentIdentifier in the AK certificate's subjectAltName (the
   attestation CA, :mod:`ostiary.authority.attestation_ca`, puts the SHA-256 of the EK
   there). An AK certificate naming no device is refused, never waved through. A
   ``hardware-module`` identifier (the module's serial number) must be the ``hwSerialNum``
   of a hardwareModuleName (RFC 4108) there.

``apple``: see :mod:`ostiary.acme.validation.apple`. Every failure is a
:class:`ChallengeFailed` of type ``badAttestationStatement`` with one line; success gives the
attested key's SubjectPublicKeyInfo (finalize must see exactly that key) and
``hardware_key=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ostiary.acme.validation.apple import BAD_ATTESTATION, verify_apple_statement
from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)
from ostiary.acme.validation.keyauth import key_authorization_digest
from ostiary.core.encoding import load_certificate
from ostiary.core.errors import (
    BadRequest,
    MalformedInput,
    PolicyDenied,
    Unauthorized,
)
from ostiary.core.jws import b64url_decode
from ostiary.core.names import (
    PERMANENT_IDENTIFIER_OID,
    decode_other_name,
    hardware_module_serial,
    sans_of,
)
from ostiary.provisioners.tpm_statement import (
    MAX_CHAIN,
    MAX_STRUCTURE,
    check_key_attributes,
    verify_ak_certificate,
    verify_certified_key,
)

#: The formats this validator knows; a provisioner enables some of them.
ATTESTATION_FORMATS = ("tpm", "apple")
#: The largest ``attObj`` we decode (a TPM statement with a 4-certificate chain is ~6 KiB).
MAX_ATTESTATION_OBJECT = 32 * 1024
DEVICE_IDENTIFIER_TYPES = ("permanent-identifier", "hardware-module")
_COSE_KEY_TYPES: dict[int, type] = {-7: ec.EllipticCurvePublicKey, -257: rsa.RSAPublicKey}


async def validate_device_attest01(
    context: ChallengeContext, settings: ValidationSettings
) -> ValidationResult:
    """Decode the attestation object and verify it in its format."""
    return verify_device_attestation(context, now=datetime.now(UTC))


def verify_device_attestation(context: ChallengeContext, *, now: datetime) -> ValidationResult:
    """:func:`validate_device_attest01` without the event loop, at ``now``."""
    if context.identifier_type not in DEVICE_IDENTIFIER_TYPES:
        raise ChallengeFailed(
            "rejectedIdentifier",
            f"device-attest-01 proves device identifiers, not {context.identifier_type!r}",
        )
    if "error" in context.payload:
        raise ChallengeFailed(BAD_ATTESTATION, "the device reported that it could not attest")
    fmt, statement = decode_attestation_object(context.payload.get("attObj"))
    enabled = context.policy.get("attestation_formats", ATTESTATION_FORMATS)
    if fmt not in ATTESTATION_FORMATS or fmt not in enabled:
        raise ChallengeFailed(
            BAD_ATTESTATION,
            f"the attestation format {fmt[:32]!r} is not accepted here "
            f"(accepted: {', '.join(f for f in ATTESTATION_FORMATS if f in enabled) or 'none'})",
        )
    roots = _roots(context.policy)
    chain = _certificates(statement.get("x5c", []))
    if fmt == "apple":
        return verify_apple_statement(context, chain, roots, now=now)
    if not roots:
        raise ChallengeFailed(
            BAD_ATTESTATION, "no attestation roots are configured for the tpm format"
        )
    try:
        return _verify_tpm(context, statement, chain, roots, now=now)
    except (BadRequest, PolicyDenied, Unauthorized) as exc:
        raise ChallengeFailed(BAD_ATTESTATION, str(exc)) from None


def decode_attestation_object(value: object) -> tuple[str, Mapping[str, Any]]:
    """``fmt`` and ``attStmt`` of the base64url CBOR attestation object."""
    if not isinstance(value, str) or not value:
        raise ChallengeFailed(BAD_ATTESTATION, "the challenge response has no 'attObj' string")
    if len(value) > MAX_ATTESTATION_OBJECT * 4 // 3 + 4:
        raise ChallengeFailed(BAD_ATTESTATION, "the attestation object is too large")
    try:
        decoded = cbor2.loads(b64url_decode(value, what="attObj"))
    except (MalformedInput, cbor2.CBORDecodeError):
        raise ChallengeFailed(BAD_ATTESTATION, "'attObj' is not base64url-encoded CBOR") from None
    if not isinstance(decoded, dict):
        raise ChallengeFailed(BAD_ATTESTATION, "the attestation object is not a CBOR map")
    fmt, statement = decoded.get("fmt"), decoded.get("attStmt")
    if not isinstance(fmt, str) or not isinstance(statement, dict):
        raise ChallengeFailed(
            BAD_ATTESTATION, "the attestation object needs a 'fmt' string and an 'attStmt' map"
        )
    return fmt, statement


def _roots(policy: Mapping[str, Any]) -> list[x509.Certificate]:
    roots = policy.get("attestation_roots") or []
    if not all(isinstance(root, x509.Certificate) for root in roots):
        raise TypeError("policy['attestation_roots'] must list cryptography Certificates")
    return list(roots)


def _certificates(value: object) -> list[x509.Certificate]:
    if not isinstance(value, list) or len(value) > MAX_CHAIN:
        raise ChallengeFailed(
            BAD_ATTESTATION, f"'x5c' must list at most {MAX_CHAIN} DER certificates"
        )
    try:  # our loader reads each in full: a bad name or version fails here, not later
        return [load_certificate(_bytes(der, "x5c")) for der in value]
    except MalformedInput:
        raise ChallengeFailed(
            BAD_ATTESTATION, "'x5c' holds a certificate that cannot be parsed"
        ) from None


def _bytes(value: object, name: str) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_STRUCTURE:
        raise ChallengeFailed(
            BAD_ATTESTATION, f"the attestation's {name!r} must be a CBOR byte string"
        )
    return value


def _verify_tpm(
    context: ChallengeContext,
    statement: Mapping[str, Any],
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: datetime,
) -> ValidationResult:
    if statement.get("ver") != "2.0":
        raise ChallengeFailed(BAD_ATTESTATION, "the TPM attestation's 'ver' is not \"2.0\"")
    algorithm = statement.get("alg")
    if (
        not isinstance(algorithm, int)
        or isinstance(algorithm, bool)
        or (algorithm not in _COSE_KEY_TYPES)
    ):
        raise ChallengeFailed(
            BAD_ATTESTATION, "the TPM attestation's 'alg' is neither ES256 (-7) nor RS256 (-257)"
        )
    ak_certificate = verify_ak_certificate(chain, roots, now=now, roots_of="this ACME provisioner")
    if not isinstance(ak_certificate.public_key(), _COSE_KEY_TYPES[algorithm]):
        raise ChallengeFailed(
            BAD_ATTESTATION, "the TPM attestation's 'alg' does not match the AK's key"
        )
    certified = verify_certified_key(
        ak_certificate,
        _bytes(statement.get("certInfo"), "certInfo"),
        _bytes(statement.get("sig"), "sig"),
        _bytes(statement.get("pubArea"), "pubArea"),
        extra_data=key_authorization_digest(context.key_authorization),
    )
    check_key_attributes(certified.attributes, require_pin=False)
    _check_ak_names_device(ak_certificate, context)
    return ValidationResult(attested_spki_der=certified.spki_der, hardware_key=True)


def _check_ak_names_device(ak_certificate: x509.Certificate, context: ChallengeContext) -> None:
    other_names = [
        name for name in sans_of(ak_certificate.extensions) if isinstance(name, x509.OtherName)
    ]
    if context.identifier_type == "hardware-module":
        serials = [hardware_module_serial(name) for name in other_names]
        if context.identifier_value.encode("utf-8") not in serials:
            raise ChallengeFailed(
                BAD_ATTESTATION,
                f"the hardware module {context.identifier_value[:64]!r} is not one the AK "
                "certificate names (hardwareModuleName)",
            )
        return
    identifiers = [
        decode_other_name(name) for name in other_names if name.type_id == PERMANENT_IDENTIFIER_OID
    ]
    if not identifiers:
        raise ChallengeFailed(
            BAD_ATTESTATION,
            "the AK certificate names no device (no permanentIdentifier): it cannot prove "
            "the identifier",
        )
    if context.identifier_value not in identifiers:
        raise ChallengeFailed(
            BAD_ATTESTATION,
            f"the identifier {context.identifier_value[:64]!r} is not the device the AK "
            "certificate names",
        )


__all__ = [
    "ATTESTATION_FORMATS",
    "MAX_ATTESTATION_OBJECT",
    "decode_attestation_object",
    "validate_device_attest01",
    "verify_device_attestation",
]
