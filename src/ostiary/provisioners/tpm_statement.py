"""The TPM structures of a key attestation: the statement a client sends, and the checks
that need no provisioner, shared by the ``attest`` provisioner and ACME device-attest-01
(``tpm`` format):

- :func:`verify_attestation_chain`: a certificate chains to the given roots (also used for
  Apple's attestation certificates);
- :func:`verify_ak_certificate`: the AK certificate chains to the given roots, is a v3
  end-entity certificate, has the tcg-kp-AIKCertificate usage and names its TPM
  (manufacturer, model, version: a directoryName SAN, TCG EK Credential Profile 3.2.9);
- :func:`verify_certified_key`: the AK's signature over ``TPMS_ATTEST``, a TPM-made
  TPM2_Certify statement over the expected ``extraData``, whose certified name is the name
  of the presented ``TPMT_PUBLIC``; it gives that key and its attributes;
- :func:`check_key_attributes`: the key is bound to the TPM (``fixedTPM``, ``fixedParent``,
  ``sensitiveDataOrigin``), not ``restricted``, and PIN-protected when asked.

Parsing uses ``tpm2-pytss`` (the ``tpm`` extra) on the CA too. See
:mod:`ostiary.provisioners.attest` for the order of the checks.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ostiary._tss import import_tss
from ostiary.authority.attestation_ca import TPM_MANUFACTURER, TPM_MODEL, TPM_VERSION
from ostiary.core.encoding import decode_base64_field, load_certificate_chain
from ostiary.core.errors import MalformedInput, PolicyDenied, Unauthorized
from ostiary.core.profiles import AIK_CERTIFICATE_OID

#: Bounds on the decoded parts of a statement (a TPMS_ATTEST is a few hundred bytes).
MAX_STRUCTURE = 4096
MAX_CHAIN = 4
_TPM_GENERATED = 0xFF544347


def _tss() -> Any:
    return import_tss("TPM attestation on the CA")


@dataclass(frozen=True)
class AttestationStatement:
    """What a client sends: see the module docstring and ``docs/api.md``."""

    nonce: str
    certify_info: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    public_area: bytes = field(repr=False)
    ak_chain: tuple[x509.Certificate, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttestationStatement:
        nonce = data.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64 or not nonce.isascii():
            raise MalformedInput("the attestation's 'nonce' is not a nonce from this CA")
        chain = data.get("ak_chain")
        if not isinstance(chain, list) or not 1 <= len(chain) <= MAX_CHAIN:
            raise MalformedInput(
                f"the attestation's 'ak_chain' must list 1 to {MAX_CHAIN} certificates"
            )
        certificates: list[x509.Certificate] = []
        for entry in chain:
            der = _b64(entry, "ak_chain")
            certificates.extend(load_certificate_chain(der))
        return cls(
            nonce=nonce,
            certify_info=_b64(data.get("certify_info"), "certify_info"),
            signature=_b64(data.get("signature"), "signature"),
            public_area=_b64(data.get("public_area"), "public_area"),
            ak_chain=tuple(certificates),
        )


def _b64(value: object, name: str) -> bytes:
    return decode_base64_field(value, f"the attestation's {name!r}", max_length=MAX_STRUCTURE * 2)


def unmarshal_tpm(kind: Any, data: bytes, name: str) -> Any:
    tss = _tss()
    try:
        value, used = kind.unmarshal(data)
    except (tss.TSS2_Exception, ValueError, TypeError):
        raise MalformedInput(f"the attestation's {name!r} is not a valid {kind.__name__}") from None
    if used != len(data):
        raise MalformedInput(f"the attestation's {name!r} has trailing bytes")
    return value


def tpm_name(public: Any, name: str) -> bytes:
    """The TPM name (``nameAlg || H(public)``) of an unmarshalled TPMT_PUBLIC."""
    try:
        return bytes(public.get_name())
    except ValueError:  # tpm2-pytss knows no such nameAlg
        raise MalformedInput(
            f"the attestation's {name!r} has a name algorithm we do not know"
        ) from None


def verify_ak_signature(
    tss: Any, certificate: x509.Certificate, data: bytes, signature: bytes
) -> None:
    parsed = unmarshal_tpm(tss.TPMT_SIGNATURE, signature, "signature")
    key = certificate.public_key()
    algorithm = int(parsed.sigAlg)
    try:
        if algorithm == int(tss.TPM2_ALG.ECDSA) and isinstance(key, ec.EllipticCurvePublicKey):
            ecdsa = parsed.signature.ecdsa
            der = encode_dss_signature(
                int.from_bytes(bytes(ecdsa.signatureR), "big"),
                int.from_bytes(bytes(ecdsa.signatureS), "big"),
            )
            key.verify(der, data, ec.ECDSA(_hash(tss, int(ecdsa.hash))))
        elif algorithm == int(tss.TPM2_ALG.RSASSA) and isinstance(key, rsa.RSAPublicKey):
            rsassa = parsed.signature.rsassa
            key.verify(bytes(rsassa.sig), data, padding.PKCS1v15(), _hash(tss, int(rsassa.hash)))
        else:
            raise Unauthorized("the attestation signature does not match the AK's key type")
    except InvalidSignature:
        raise Unauthorized("the attestation signature does not verify with the AK") from None


def _hash(tss: Any, algorithm: int) -> hashes.HashAlgorithm:
    known: dict[int, hashes.HashAlgorithm] = {
        int(tss.TPM2_ALG.SHA256): hashes.SHA256(),
        int(tss.TPM2_ALG.SHA384): hashes.SHA384(),
        int(tss.TPM2_ALG.SHA512): hashes.SHA512(),
    }
    if algorithm not in known:
        raise Unauthorized("the attestation is signed with a hash we do not accept")
    return known[algorithm]


def public_key_of_area(tss: Any, public: Any) -> Any:
    if int(public.type) == int(tss.TPM2_ALG.ECC):
        curves: dict[int, ec.EllipticCurve] = {
            int(tss.TPM2_ECC.NIST_P256): ec.SECP256R1(),
            int(tss.TPM2_ECC.NIST_P384): ec.SECP384R1(),
        }
        curve = curves.get(int(public.parameters.eccDetail.curveID))
        if curve is None:
            raise PolicyDenied("the attested key uses a curve we do not accept")
        point = public.unique.ecc
        try:
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(bytes(point.x), "big"), int.from_bytes(bytes(point.y), "big"), curve
            ).public_key()
        except ValueError:
            raise MalformedInput("the attested public area holds no valid EC point") from None
    if int(public.type) == int(tss.TPM2_ALG.RSA):
        exponent = int(public.parameters.rsaDetail.exponent) or 65537
        modulus = int.from_bytes(bytes(public.unique.rsa), "big")
        try:
            return rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError:
            raise MalformedInput("the attested public area holds no valid RSA key") from None
    raise PolicyDenied("the attested key is neither an ECC nor an RSA key")


def verify_attestation_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: datetime,
    roots_of: str,
) -> x509.Certificate:
    """``chain[0]``, after checking that it chains through ``chain[1:]`` to ``roots`` at
    ``now``. ``roots_of`` names whose roots they are, for the message (``provisioner 'x'``).

    The leaf may carry any extension (an attestation certificate is not a TLS certificate);
    its issuers must be CA certificates as RFC 5280 defines them.
    """
    if not chain:
        raise MalformedInput("the attestation carries no certificate")
    builder = PolicyBuilder().store(Store(list(roots))).time(now)
    ee_policy = ExtensionPolicy.permit_all().may_be_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None
    )
    verifier = builder.extension_policies(
        ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
    ).build_client_verifier()
    try:
        verifier.verify(chain[0], list(chain[1:]))
    except VerificationError:
        raise Unauthorized(
            f"the attestation certificate does not chain to an attestation root of {roots_of}"
        ) from None
    return chain[0]


def verify_ak_certificate(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: datetime,
    roots_of: str,
) -> x509.Certificate:
    """The AK certificate (``chain[0]``) after checking it chains to ``roots`` at ``now``
    (:func:`verify_attestation_chain`), is a v3 end-entity certificate, has the
    tcg-kp-AIKCertificate usage and names its TPM's manufacturer, model and version.
    """
    ak_certificate = verify_attestation_chain(chain, roots, now=now, roots_of=roots_of)
    extensions = ak_certificate.extensions
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = x509.BasicConstraints(ca=False, path_length=None)
    if ak_certificate.version != x509.Version.v3 or constraints.ca:
        raise Unauthorized("the attestation key's certificate is not a v3 end-entity certificate")
    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    # Without it, a client certificate of a non-restricted TPM key could sign forged statements.
    if AIK_CERTIFICATE_OID not in usages:
        raise Unauthorized(
            "the attestation key's certificate is not an AK certificate (no "
            "tcg-kp-AIKCertificate usage): only a restricted TPM key may vouch for keys"
        )
    if not _names_the_tpm(extensions):
        raise Unauthorized(
            "the attestation key's certificate does not name its TPM (manufacturer, model and "
            "version in a directoryName subjectAltName, as the EK certificate gives them)"
        )
    return ak_certificate


def _names_the_tpm(extensions: x509.Extensions) -> bool:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    wanted = {TPM_MANUFACTURER, TPM_MODEL, TPM_VERSION}
    return any(
        wanted <= {attribute.oid for attribute in name}
        for name in san.get_values_for_type(x509.DirectoryName)
    )


@dataclass(frozen=True)
class CertifiedKey:
    """The key a TPM certified: its public key and its ``TPMA_OBJECT`` attributes."""

    public_key: Any
    attributes: int

    @property
    def spki_der(self) -> bytes:
        return spki_of(self.public_key)


def verify_certified_key(
    ak_certificate: x509.Certificate,
    certify_info: bytes,
    signature: bytes,
    public_area: bytes,
    *,
    extra_data: bytes,
) -> CertifiedKey:
    """The key of ``public_area``, after checking that the AK signed ``certify_info``, a
    TPM-made TPM2_Certify statement (TPM 2.0 Part 3 section 18.2) over ``extra_data`` whose
    certified name is ``nameAlg || H(public_area)``.
    """
    tss = _tss()
    verify_ak_signature(tss, ak_certificate, certify_info, signature)
    attest = unmarshal_tpm(tss.TPMS_ATTEST, certify_info, "certify_info")
    if int(attest.magic) != _TPM_GENERATED:
        raise Unauthorized("the attestation was not generated by a TPM (magic)")
    if int(attest.type) != int(tss.TPM2_ST.ATTEST_CERTIFY):
        raise Unauthorized("the attestation is not a TPM2_Certify statement")
    if not hmac.compare_digest(bytes(attest.extraData), extra_data):
        raise Unauthorized("the attestation was made over another nonce (extraData)")
    public = unmarshal_tpm(tss.TPMT_PUBLIC, public_area, "public_area")
    certified = bytes(attest.attested.certify.name)
    if not hmac.compare_digest(certified, tpm_name(public, "public_area")):
        raise Unauthorized(
            "the certified name is not the name of the presented public area: the TPM "
            "vouched for another key"
        )
    return CertifiedKey(public_key_of_area(tss, public), int(public.objectAttributes))


def check_key_attributes(attributes: int, *, require_pin: bool) -> None:
    """The key is bound to the TPM and usable as a client key (see the module docstring)."""
    flags = _tss().TPMA_OBJECT
    required = {
        "fixedTPM": flags.FIXEDTPM,
        "fixedParent": flags.FIXEDPARENT,
        "sensitiveDataOrigin": flags.SENSITIVEDATAORIGIN,
    }
    if require_pin:
        required["userWithAuth"] = flags.USERWITHAUTH
    missing = [name for name, flag in required.items() if not attributes & int(flag)]
    if missing:
        raise PolicyDenied(
            f"the attested key lacks {', '.join(missing)}: it is not a key bound to the TPM "
            "as required",
            missing=missing,
        )
    if attributes & int(flags.RESTRICTED):
        raise PolicyDenied("the attested key is restricted: it cannot be a client key")


def spki_of(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


__all__ = [
    "MAX_CHAIN",
    "MAX_STRUCTURE",
    "AttestationStatement",
    "CertifiedKey",
    "check_key_attributes",
    "public_key_of_area",
    "spki_of",
    "unmarshal_tpm",
    "verify_ak_certificate",
    "verify_ak_signature",
    "verify_attestation_chain",
    "verify_certified_key",
]
