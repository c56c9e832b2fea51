"""Making the CA itself: a self-signed root and the issuing intermediate under it.

The root is long-lived (default 10 years) with pathLen 1; the intermediate issues leaves
(pathLen 0) and never outlives the root. Both may carry name constraints (RFC 5280 4.2.1.10),
which limit every certificate below them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from ostiary.core.errors import BadRequest, LifetimeNotAllowed
from ostiary.core.issuance import BACKDATE, CAUrls, ca_pointer_extensions, random_serial_number
from ostiary.core.keys import check_public_key, signature_hash_for

ROOT_LIFETIME = timedelta(days=3650)
INTERMEDIATE_LIFETIME = timedelta(days=1825)


@dataclass(frozen=True)
class NameConstraints:
    """Permitted and excluded subtrees, as ``dns:``/``email:``/``ip:``/``uri:`` texts."""

    permitted: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    def to_extension(self) -> x509.NameConstraints | None:
        if not self.permitted and not self.excluded:
            return None
        return x509.NameConstraints(
            permitted_subtrees=[_subtree(v) for v in self.permitted] or None,
            excluded_subtrees=[_subtree(v) for v in self.excluded] or None,
        )


def _subtree(text: str) -> x509.GeneralName:
    kind, colon, value = text.partition(":")
    if not colon:
        kind, value = "dns", text
    kind = kind.lower()
    if kind == "dns":
        return x509.DNSName(value.lstrip("*"))
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    if kind == "ip":
        try:
            return x509.IPAddress(ipaddress.ip_network(value, strict=True))
        except ValueError:
            raise BadRequest(f"name constraint {text!r}: an IP constraint is a network") from None
    raise BadRequest(f"name constraint {text!r}: use dns:, email:, uri: or ip:")


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def create_root_certificate(
    subject: x509.Name,
    private_key: CertificateIssuerPrivateKeyTypes,
    *,
    now: datetime,
    lifetime: timedelta = ROOT_LIFETIME,
    path_length: int = 1,
    name_constraints: NameConstraints | None = None,
) -> x509.Certificate:
    """A self-signed root CA certificate."""
    public_key = private_key.public_key()
    check_public_key(public_key)
    now = now.replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    constraints = name_constraints.to_extension() if name_constraints else None
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    return builder.sign(private_key, signature_hash_for(private_key))


def create_intermediate_certificate(
    subject: x509.Name,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    root_certificate: x509.Certificate,
    root_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
    lifetime: timedelta = INTERMEDIATE_LIFETIME,
    path_length: int = 0,
    name_constraints: NameConstraints | None = None,
    root_urls: CAUrls | None = None,
) -> x509.Certificate:
    """An issuing CA certificate signed by the root, never outliving it.

    ``root_urls`` point at the *root's* CRL and certificate, so that relying parties can
    check the intermediate itself.
    """
    check_public_key(public_key)
    now = now.replace(microsecond=0)
    root_end = root_certificate.not_valid_after_utc
    not_after = min(now + lifetime, root_end)
    if not_after <= now:
        raise LifetimeNotAllowed("the root has expired: it cannot sign an intermediate")
    root_ski = root_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_certificate.subject)
        .public_key(public_key)
        .serial_number(random_serial_number())
        .not_valid_before(max(now - BACKDATE, root_certificate.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(root_ski.value.digest, None, None), critical=False
        )
    )
    constraints = name_constraints.to_extension() if name_constraints else None
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    for value, critical in ca_pointer_extensions(root_urls or CAUrls()):
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(root_key, signature_hash_for(root_key))


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    """The certificate's SHA-256 fingerprint as lower-case hex (no colons)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def key_id_hex(certificate: x509.Certificate) -> str:
    """The certificate's subject key identifier as lower-case hex."""
    return certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest.hex()


def issued_by(certificate: x509.Certificate, issuers: Sequence[x509.Certificate]) -> bool:
    """Whether ``certificate`` was signed by one of ``issuers`` (signature checked)."""
    for issuer in issuers:
        try:
            certificate.verify_directly_issued_by(issuer)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False
