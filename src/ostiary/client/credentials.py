"""Where the proof for a new certificate comes from: a pluggable credential source.

``ostiary cert request --token T`` uses :class:`OneTimeToken`; a later OIDC sign-in (browser,
loopback redirect) is another :class:`CredentialSource` that obtains a token for the same
subject and names. Enrollment only asks the source for a token; it never knows how.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography import x509

from ostiary.core.errors import BadRequest

if TYPE_CHECKING:
    from ostiary.client.api import IssuedCertificate, OstiaryClient


class CredentialSource(Protocol):
    """Something that yields a token the CA accepts at ``POST /sign``."""

    def token_for(self, subject: x509.Name, sans: Sequence[x509.GeneralName]) -> str:
        """A token authorizing a certificate for ``subject`` with ``sans``."""
        ...


@dataclass(frozen=True)
class OneTimeToken:
    """A token made beforehand (``ostiary ca token``), handed to the holder."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise BadRequest("the token is empty")

    def token_for(self, subject: x509.Name, sans: Sequence[x509.GeneralName]) -> str:
        return self.token.strip()


@runtime_checkable
class KeyBoundCredentialSource(Protocol):
    """A credential made for one request's key, so it needs the CSR (an OIDC sign-in, whose
    nonce commits to the key: :class:`ostiary.client.oidc.OIDCSignIn`). It enrolls itself.
    """

    def enroll(
        self, client: OstiaryClient, csr: x509.CertificateSigningRequest, not_after: Any = None
    ) -> IssuedCertificate:
        """Obtain the credential for ``csr`` and have the CA sign it."""
        ...
