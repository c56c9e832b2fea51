"""The device side of ACME device-attest-01, ``tpm`` format (draft-ietf-acme-device-attest):
the ``attObj`` a device posts to its challenge URL.

For each order the device makes a fresh key in its TPM and has its attestation key (AK)
certify it (TPM2_Certify) over ``SHA-256(key authorization)``, the key authorization being
``token + "." + the account key's JWK thumbprint`` (RFC 8555 section 8.1). The attestation
object is the WebAuthn-style CBOR map ``{"fmt": "tpm", "attStmt": {...}}`` with the TPM
statement (WebAuthn Level 2 section 8.3: ``ver``, ``alg``, ``x5c``, ``sig``, ``certInfo``,
``pubArea``), base64url-encoded without padding. The certified key then signs the CSR at
finalize, and the server issues only for that key.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ostiary.client.tpm import AttestationKey, TpmPrivateKey, certify_key_over
from ostiary.core.errors import BadRequest
from ostiary.core.jws import b64url

#: COSE algorithm identifiers (RFC 9053 / the IANA COSE registry) of the AK's signature.
COSE_ES256 = -7
COSE_RS256 = -257


def tpm_attestation_statement(
    key: TpmPrivateKey, ak: AttestationKey, key_authorization: str
) -> dict[str, Any]:
    """The ``tpm`` attestation statement for ``key``, certified over the key authorization."""
    if not ak.chain:
        raise BadRequest("the attestation key has no certificate: enroll it first")
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    certify_info, signature = certify_key_over(key, ak, digest)
    ak_key = ak.chain[0].public_key()
    if isinstance(ak_key, ec.EllipticCurvePublicKey):
        algorithm = COSE_ES256
    elif isinstance(ak_key, rsa.RSAPublicKey):
        algorithm = COSE_RS256
    else:
        raise BadRequest("the attestation key is neither an ECDSA nor an RSA key")
    return {
        "ver": "2.0",
        "alg": algorithm,
        "x5c": [c.public_bytes(serialization.Encoding.DER) for c in ak.chain],
        "sig": signature,
        "certInfo": certify_info,
        "pubArea": key.public_area,
    }


def encode_attestation_object(fmt: str, statement: dict[str, Any]) -> str:
    """base64url (unpadded) of the CBOR map ``{"fmt": fmt, "attStmt": statement}``."""
    return b64url(cbor2.dumps({"fmt": fmt, "attStmt": statement}))


def tpm_challenge_payload(
    key: TpmPrivateKey, ak: AttestationKey, key_authorization: str
) -> dict[str, str]:
    """The JSON body of the device-attest-01 challenge POST: ``{"attObj": ...}``."""
    statement = tpm_attestation_statement(key, ak, key_authorization)
    return {"attObj": encode_attestation_object("tpm", statement)}


__all__ = [
    "encode_attestation_object",
    "tpm_attestation_statement",
    "tpm_challenge_payload",
]
