"""Signing DER structures we assemble ourselves (CRLs, OCSP responses) with a CA key object.

cryptography's builders sign certificates; for a CRL with a million entries and for OCSP
responses whose ``producedAt`` must be the injected ``now``, Ostiary encodes the to-be-signed
part itself and signs it here. Only the key object's ``sign()`` is called, so a key that
lives in an HSM (behind cryptography's private-key interface) works the same as a file key.

The algorithms are those of :func:`ostiary.core.keys.signature_hash_for`: ECDSA with SHA-256
or SHA-384 (RFC 5758 3.2), RSA PKCS #1 v1.5 with SHA-256 (RFC 4055 5, parameters NULL) and
EdDSA (RFC 8410 3, no parameters).
"""

from __future__ import annotations

from asn1crypto import algos
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.core.errors import BadRequest
from ostiary.core.keys import signature_hash_for

_HASH_NAMES = frozenset({"sha256", "sha384", "sha512"})


def signature_algorithm_der(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The DER ``AlgorithmIdentifier`` of the signatures :func:`sign_data` makes with ``key``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        name = "ed25519"
    elif isinstance(key, ed448.Ed448PrivateKey):
        name = "ed448"
    else:
        digest = signature_hash_for(key)
        if digest is None or digest.name not in _HASH_NAMES:  # pragma: no cover - defensive
            raise BadRequest(f"no signature algorithm for {type(key).__name__}")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            name = f"{digest.name}_ecdsa"
        elif isinstance(key, rsa.RSAPrivateKey):
            name = f"{digest.name}_rsa"
        else:
            raise BadRequest(f"a {type(key).__name__} cannot sign CRLs or OCSP responses")
    return bytes(algos.SignedDigestAlgorithm({"algorithm": name}).dump())


def sign_data(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> bytes:
    """Sign ``data`` (a DER to-be-signed structure) as :func:`signature_algorithm_der` says."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    digest = signature_hash_for(key)
    if digest is None:  # pragma: no cover - only EdDSA keys have no hash
        raise BadRequest(f"no signature hash for {type(key).__name__}")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(digest))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), digest)
    raise BadRequest(f"a {type(key).__name__} cannot sign CRLs or OCSP responses")
