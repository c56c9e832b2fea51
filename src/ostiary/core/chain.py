"""Checking a certificate against trusted roots and, optionally, CRLs.

Path building and validation (RFC 5280 section 6) is pyca/cryptography's verifier; this module
chooses the policy from the certificate's usage and adds the revocation check against CRLs
whose signature, issuer and freshness are checked first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ostiary.core.encoding import format_serial
from ostiary.core.errors import InvalidCertificate, RevokedCertificate


@dataclass(frozen=True)
class VerifiedChain:
    """A validated path, leaf first, root last."""

    chain: tuple[x509.Certificate, ...]
    revocation_checked: bool


def _usages(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def verify_certificate_chain(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> VerifiedChain:
    """Validate ``leaf`` up to one of ``roots``; with CRLs, refuse a revoked certificate.

    Client certificates (EKU clientAuth) are checked with the client policy, server
    certificates with the server policy for their first DNS name or IP address.
    """
    if not roots:
        raise InvalidCertificate("no trusted root given")
    builder = PolicyBuilder().store(Store(list(roots))).time(now)
    usages = _usages(leaf)
    try:
        if (
            ExtendedKeyUsageOID.SERVER_AUTH in usages
            and ExtendedKeyUsageOID.CLIENT_AUTH not in usages
        ):
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = names.get_values_for_type(x509.DNSName)
            ips = names.get_values_for_type(x509.IPAddress)
            subject: x509.DNSName | x509.IPAddress = (
                x509.DNSName(dns[0]) if dns else x509.IPAddress(ips[0])
            )
            chain = builder.build_server_verifier(subject).verify(leaf, list(intermediates))
        else:
            # Web PKI defaults, except that a client certificate may be named by its subject
            # alone: RFC 5280 allows it, and CN-only device certificates are common.
            ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
                x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
            )
            client = builder.extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
            ).build_client_verifier()
            chain = client.verify(leaf, list(intermediates)).chain
    except VerificationError as exc:
        raise InvalidCertificate(f"the certificate does not verify: {exc}") from None
    except (x509.ExtensionNotFound, IndexError):
        raise InvalidCertificate("a server certificate without a DNS or IP name") from None
    path = tuple(chain)
    if crls:
        check_revocation(path, crls, now=now)
    return VerifiedChain(path, revocation_checked=bool(crls))


def check_revocation(
    path: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    *,
    now: datetime,
) -> None:
    """Refuse if a CRL from the certificate's issuer lists it. Each non-root certificate
    whose issuer has a CRL among ``crls`` is checked; the CRL must verify and be current.
    """
    for certificate, issuer in pairwise(path):
        for crl in crls:
            if crl.issuer != issuer.subject:
                continue
            try:
                valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (InvalidSignature, TypeError, ValueError):
                valid = False
            if not valid:
                raise InvalidCertificate(
                    f"the CRL of {issuer.subject.rfc4514_string()} does not verify"
                )
            next_update = crl.next_update_utc
            if next_update is not None and next_update < now:
                raise InvalidCertificate(
                    f"the CRL of {issuer.subject.rfc4514_string()} is out of date "
                    f"(nextUpdate {next_update:%Y-%m-%d %H:%M:%SZ})"
                )
            entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
            if entry is not None:
                raise RevokedCertificate(
                    f"certificate {format_serial(certificate.serial_number)} is revoked "
                    f"(since {entry.revocation_date_utc:%Y-%m-%d %H:%M:%SZ})",
                    serial=format_serial(certificate.serial_number),
                )
