"""Enrollment: a key made here, a CSR, a credential, a certificate. The key never travels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.client.api import IssuedCertificate, OstiaryClient
from ostiary.client.credentials import CredentialSource, KeyBoundCredentialSource
from ostiary.core.keys import KeyType, generate_private_key, signature_hash_for
from ostiary.core.names import sans_of


@dataclass(frozen=True)
class Enrollment:
    """A new certificate and the private key made for it on this machine."""

    issued: IssuedCertificate
    private_key: CertificateIssuerPrivateKeyTypes


def build_csr(
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    private_key: CertificateIssuerPrivateKeyTypes,
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for ``subject`` and ``sans``, signed by ``private_key``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(private_key, signature_hash_for(private_key))


def rekey_csr(
    certificate: x509.Certificate, private_key: CertificateIssuerPrivateKeyTypes
) -> x509.CertificateSigningRequest:
    """A request for the same subject and names as ``certificate``, for a new key."""
    return build_csr(certificate.subject, sans_of(certificate.extensions), private_key)


def request_certificate(
    client: OstiaryClient,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    *,
    credential: CredentialSource | KeyBoundCredentialSource,
    key_type: KeyType = KeyType.P256,
    not_after: timedelta | datetime | str | None = None,
) -> Enrollment:
    """Make a key, ask ``credential`` for a token, and have the CA sign a CSR for it."""
    if isinstance(credential, KeyBoundCredentialSource):
        key = generate_private_key(key_type)
        request = build_csr(subject, sans, key)
        return Enrollment(credential.enroll(client, request, not_after), key)
    token = credential.token_for(subject, sans)
    private_key = generate_private_key(key_type)
    csr = build_csr(subject, sans, private_key)
    return Enrollment(client.sign(csr, token, not_after), private_key)
