"""Key types: generation, the hash each one signs with, and the floor we refuse below."""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)

from ostiary.core.errors import BadRequest, WeakKey

#: RSA moduli below this are refused everywhere (CSR, CA keys).
MIN_RSA_BITS = 2048
#: Curves we issue for. P-521 is accepted in CSRs: it is strong and some smart cards use it.
ACCEPTED_CURVES: frozenset[str] = frozenset({"secp256r1", "secp384r1", "secp521r1"})


class KeyType(enum.StrEnum):
    """The key types Ostiary generates, by the names the CLI uses."""

    P256 = "p256"
    P384 = "p384"
    ED25519 = "ed25519"
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"


_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.P256: ec.SECP256R1(),
    KeyType.P384: ec.SECP384R1(),
}
_RSA_BITS: dict[KeyType, int] = {
    KeyType.RSA2048: 2048,
    KeyType.RSA3072: 3072,
    KeyType.RSA4096: 4096,
}


def parse_key_type(value: str) -> KeyType:
    """Read a key type name as typed by a person (``P256``, ``rsa-2048`` and ``ec`` included)."""
    normal = value.strip().lower().replace("-", "").replace("_", "")
    aliases = {
        "ec": "p256",
        "ecdsa": "p256",
        "secp256r1": "p256",
        "secp384r1": "p384",
        "rsa": "rsa2048",
    }
    normal = aliases.get(normal, normal)
    try:
        return KeyType(normal)
    except ValueError:
        names = ", ".join(k.value for k in KeyType)
        raise BadRequest(
            f"unknown key type {value!r}: use one of {names}", key_type=value
        ) from None


def generate_private_key(key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
    """Make a new private key of ``key_type`` from the operating system's CSPRNG."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])


def key_type_of(key: CertificatePublicKeyTypes | PrivateKeyTypes) -> KeyType | None:
    """The :class:`KeyType` a key belongs to, or ``None`` for one we do not generate."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, ec.EllipticCurvePublicKey):
        return {"secp256r1": KeyType.P256, "secp384r1": KeyType.P384}.get(public.curve.name)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(public, rsa.RSAPublicKey):
        return {2048: KeyType.RSA2048, 3072: KeyType.RSA3072, 4096: KeyType.RSA4096}.get(
            public.key_size
        )
    return None


def describe_public_key(key: CertificatePublicKeyTypes) -> str:
    """A short human description: ``ECDSA P-256``, ``RSA 3072``, ``Ed25519``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {names.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def check_public_key(key: object) -> CertificatePublicKeyTypes:
    """Refuse keys that are weak or that we do not know; return the key, typed.

    RSA below 2048 bits or with a small public exponent, curves other than P-256/P-384/P-521,
    and key types that cannot sign (X25519, DSA) are refused with :class:`WeakKey`.
    """
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise WeakKey(
                f"RSA key of {key.key_size} bits is too weak: "
                f"at least {MIN_RSA_BITS} bits required",
                key_size=key.key_size,
            )
        if key.public_numbers().e < 65537:
            raise WeakKey("RSA public exponent below 65537 is refused")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ACCEPTED_CURVES:
            raise WeakKey(
                f"elliptic curve {key.curve.name} is not accepted: use P-256, P-384 or P-521",
                curve=key.curve.name,
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key
    raise WeakKey(f"unsupported public key type {type(key).__name__}")


SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def signature_hash_for(
    key: CertificateIssuerPrivateKeyTypes | CertificatePublicKeyTypes,
) -> SignatureHash | None:
    """The hash a CA key signs with: SHA-384 for P-384/P-521, none for EdDSA, else SHA-256."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()
