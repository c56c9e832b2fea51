"""The TPM structures of a key attestation: the statement a client sends, and the checks
of its parts that need no provisioner (the AK's signature, the attested public key).

Parsing uses ``tpm2-pytss`` (the ``tpm`` extra) on the CA too. See
:mod:`ostiary.provisioners.attest` for the order of the checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ostiary._tss import import_tss
from ostiary.core.encoding import decode_base64_field, load_certificate_chain
from ostiary.core.errors import MalformedInput, PolicyDenied, Unauthorized

#: Bounds on the decoded parts of a statement (a TPMS_ATTEST is a few hundred bytes).
MAX_STRUCTURE = 4096
MAX_CHAIN = 4


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


def spki_of(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


__all__ = [
    "MAX_CHAIN",
    "MAX_STRUCTURE",
    "AttestationStatement",
    "public_key_of_area",
    "spki_of",
    "unmarshal_tpm",
    "verify_ak_signature",
]
