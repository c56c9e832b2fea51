"""EC private keys held by a device (a PKCS#11 token, a TPM): they sign, nothing more.

Subclassing cryptography's ``EllipticCurvePrivateKey`` lets cryptography's own builders
(certificates, CSRs, CRLs, OCSP) call our ``sign()``, which sends the digest to the device.
Everything that would reveal the private value refuses with ``TypeError``, as cryptography
does for operations a key does not support.
"""

from __future__ import annotations

from typing import NoReturn

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed


def digest_for_signing(data: bytes, algorithm: object) -> tuple[bytes, hashes.HashAlgorithm]:
    """``data`` hashed with ``algorithm``, or as is when it is :class:`Prehashed`: what a
    device that signs digests (``CKM_ECDSA``, TPM2_Sign) is given.
    """
    if isinstance(algorithm, Prehashed):
        digest_algorithm: hashes.HashAlgorithm = algorithm._algorithm
        if len(data) != digest_algorithm.digest_size:
            raise ValueError("the prehashed data has the wrong length")
        return data, digest_algorithm
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise TypeError("a hash algorithm is required")
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize(), algorithm


class HeldECPrivateKey(ec.EllipticCurvePrivateKey):
    """Everything but ``sign``: the public half, the curve, and refusals to export."""

    #: Where the key lives, for messages ("a PKCS#11 token", "a TPM").
    held_in = "a device"

    def __init__(self, public: ec.EllipticCurvePublicKey) -> None:
        self._public = public

    def _not_exportable(self) -> NoReturn:
        raise TypeError(f"this key lives in {self.held_in} and cannot be exported")

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError(f"a key in {self.held_in} only signs")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._not_exportable()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        self._not_exportable()

    def __copy__(self) -> HeldECPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> HeldECPrivateKey:
        return self
