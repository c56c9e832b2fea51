"""The Signer protocol: where a CA private key lives, behind one interface.

A signer hands out a *private-key object* that pyca/cryptography's builders accept
(``CertificateBuilder.sign``, ``CertificateRevocationListBuilder.sign``, the OCSP builder).
For an encrypted file that is the ordinary key object; for a PKCS#11 token it is an object
subclassing cryptography's private-key ABCs whose ``sign()`` calls the token, so that the key
itself never leaves it. Everything above the signer only ever sees that object.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)


@runtime_checkable
class Signer(Protocol):
    """A CA key, usable for signing and never exported."""

    #: A label for logs and errors (a file name, a token label): never secret.
    label: str

    @property
    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        """The object to pass to cryptography's builders; its ``sign()`` does the work."""
        ...

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        """The public half, for certificates and checks."""
        ...

    def close(self) -> None:
        """Release sessions or handles; the signer is unusable afterwards."""
        ...
