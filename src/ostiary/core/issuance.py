"""The one issuance pipeline: CSR + authorization + issuing CA -> certificate.

Every entry path (offline ``ca sign``, the API, ACME, the console) ends here, so that a rule
written once holds everywhere. The steps, in order:

1. :func:`verify_csr`: the CSR parses, its self-signature verifies, its key is strong enough.
2. Extra request checks supplied by the provisioner (:class:`RequestCheck`), e.g. "the CSR key
   is the attested key".
3. :func:`check_requested_names`: every name the CSR asks for (subject CN and SANs) is one the
   authorization grants, and the CSR asks for at most one CN. The certificate then carries
   the *authorization's* names: names are never copied blindly from the CSR.
4. :func:`certificate_names`: the subject and SANs the certificate will carry, in canonical
   form; a subject with two CNs or a multi-valued RDN, or a SAN that is not a valid name
   (a NUL, a space, a slash in a DNS name) is refused here, whichever provisioner made the
   authorization. The profile checks the names' kinds and supplies KU/EKU.
5. Validity: not_before backdated one minute; not_after from the authorization's lifetime
   claims, never past the issuer's not_after.
6. Build with a random serial (positive, at most 20 octets, 159 bits from the CSPRNG), SKI,
   AKI, CDP, AIA and policies, and sign with the issuer's key (which may live in an HSM).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID, ObjectIdentifier

from ostiary.core.errors import InvalidCSR, InvalidName, LifetimeNotAllowed, NameNotAuthorized
from ostiary.core.keys import check_public_key, signature_hash_for
from ostiary.core.lifetime import Lifetime, format_duration, resolve_not_after
from ostiary.core.names import (
    canonical_general_name,
    check_subject,
    common_name,
    format_general_name,
    sans_of,
)
from ostiary.core.profiles import ProfileOptions, get_profile

#: How far not_before is set back, to tolerate clients whose clocks run a little behind.
BACKDATE = timedelta(minutes=1)


@dataclass(frozen=True)
class CAUrls:
    """Where relying parties find the CA's CRL, OCSP responder and certificate (RFC 5280)."""

    crl: str | None = None
    ocsp: str | None = None
    ca_issuers: str | None = None


@dataclass(frozen=True)
class IssuingCA:
    """An issuing CA: its certificate, the key object that signs (file or token), its URLs.

    ``chain`` is the issuing certificate followed by its issuers up to the root.
    """

    certificate: x509.Certificate
    private_key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    urls: CAUrls = CAUrls()
    policies: tuple[str, ...] = ()

    @property
    def key_id(self) -> bytes:
        return self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest


@dataclass(frozen=True)
class Authorization:
    """What a verified credential allows: the output of a provisioner, the input of issuance.

    ``names`` are exactly the SANs the certificate will carry; ``subject`` its subject.
    ``requested`` is a lifetime or an absolute not_after asked for by the client, checked
    against ``lifetime``.
    """

    subject: x509.Name
    names: tuple[x509.GeneralName, ...]
    profile: str = "client"
    lifetime: Lifetime = field(default_factory=Lifetime)
    requested: timedelta | datetime | None = None
    policies: tuple[str, ...] = ()
    options: ProfileOptions = field(default_factory=ProfileOptions)
    provisioner: str | None = None


class RequestCheck(Protocol):
    """A provisioner-supplied check run on the verified CSR before anything is built."""

    def __call__(self, csr: x509.CertificateSigningRequest, authorization: Authorization) -> None:
        """Raise an :class:`~ostiary.core.errors.OstiaryError` to refuse the request."""


def verify_csr(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    """Refuse a CSR whose signature does not verify or whose key is weak; return its key."""
    try:
        valid = csr.is_signature_valid
    except Exception as exc:
        raise InvalidCSR(f"the CSR signature cannot be checked: {exc}") from None
    if not valid:
        raise InvalidCSR("the CSR signature does not verify: the CSR was altered or is forged")
    try:
        public_key = csr.public_key()
    except ValueError as exc:
        raise InvalidCSR(f"the CSR public key cannot be read: {exc}") from None
    return check_public_key(public_key)


def check_requested_names(
    csr: x509.CertificateSigningRequest, authorization: Authorization
) -> None:
    """Every name the CSR asks for must be granted by the authorization.

    The CSR may ask for fewer names (the certificate still carries the authorized ones) but
    never for another: that request is refused rather than silently trimmed, so that a client
    learns at once that it asked for something it may not have.
    """
    granted = {_comparable(n) for n in authorization.names}
    subject_cn = common_name(authorization.subject)
    try:
        requested = sans_of(csr.extensions)
    except (ValueError, x509.DuplicateExtension) as exc:
        raise InvalidCSR(f"the CSR extensions cannot be parsed: {exc}") from None
    for name in requested:
        if _comparable(name) not in granted:
            raise NameNotAuthorized(
                f"the CSR asks for {format_general_name(name)}, which is not authorized",
                name=format_general_name(name),
            )
    csr_cn = common_name(csr.subject)  # refuses a CSR asking for two CNs
    if csr_cn is not None and csr_cn != subject_cn:
        as_names = {v.split(":", 1)[1] for v in granted}
        if csr_cn.lower() not in as_names:
            raise NameNotAuthorized(
                f"the CSR asks for common name {csr_cn!r}, which is not authorized", name=csr_cn
            )


def certificate_names(
    authorization: Authorization,
) -> tuple[x509.Name, list[x509.GeneralName]]:
    """The subject and SANs a certificate for ``authorization`` carries, canonical and valid.

    This is the one place the rule "no certificate carries a forbidden name" lives: every
    entry path (tokens, OIDC, approval, attestation, renewal, offline ``ca sign``, and any
    protocol to come) builds through :func:`build_leaf_certificate`, which calls this.
    """
    subject = check_subject(authorization.subject)
    names: list[x509.GeneralName] = []
    for name in authorization.names:
        if authorization.profile == "attestation-key" and _is_tpm_device_name(name):
            canonical = name  # filled in by the CA from the EK certificate, never requested
        else:
            canonical = canonical_general_name(name)
        if canonical not in names:
            names.append(canonical)
    if not len(subject) and not names:  # RFC 5280 4.1.2.6: then the SANs name the subject
        raise InvalidName("a certificate needs a subject common name or a SAN: it names nobody")
    return subject, names


#: tpmManufacturer, tpmModel, tpmVersion (TCG EK Credential Profile): the one directoryName
#: SAN a certificate may carry, and only an attestation key's, whose names the CA reads from
#: the TPM's EK certificate (authority/attestation_ca.py).
_TPM_DEVICE_ATTRIBUTES = frozenset({"2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3"})


def _is_tpm_device_name(name: x509.GeneralName) -> bool:
    return (
        isinstance(name, x509.DirectoryName)
        and len(name.value) > 0
        and all(a.oid.dotted_string in _TPM_DEVICE_ATTRIBUTES for a in name.value)
    )


def _comparable(name: x509.GeneralName) -> str:
    text = format_general_name(name)
    kind, _, value = text.partition(":")
    if kind in ("dns", "email"):
        return f"{kind}:{value.lower()}"
    if kind == "ip":
        return f"ip:{ipaddress.ip_address(value)}"
    return text


def random_serial_number() -> int:
    """A positive serial of at most 20 octets with 159 bits from the CSPRNG (RFC 5280 4.1.2.2)."""
    while True:
        serial = x509.random_serial_number()
        if serial > 0:
            return serial


def issue_certificate(
    csr: x509.CertificateSigningRequest,
    authorization: Authorization,
    issuer: IssuingCA,
    *,
    now: datetime,
    checks: Sequence[RequestCheck] = (),
    serial_number: int | None = None,
) -> x509.Certificate:
    """Run the pipeline (see the module docstring) and return the signed certificate."""
    public_key = verify_csr(csr)
    for check in checks:
        check(csr, authorization)
    check_requested_names(csr, authorization)
    return build_leaf_certificate(
        public_key, authorization, issuer, now=now, serial_number=serial_number
    )


def build_leaf_certificate(
    public_key: CertificatePublicKeyTypes,
    authorization: Authorization,
    issuer: IssuingCA,
    *,
    now: datetime,
    serial_number: int | None = None,
) -> x509.Certificate:
    """Steps 4-6 of the pipeline, for a public key that has already been verified."""
    profile = get_profile(authorization.profile)
    subject, names = certificate_names(authorization)
    profile.check_names(names)
    not_before, not_after = validity_for(authorization, issuer.certificate, now=now)

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial_number or random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for value, critical in profile.extensions(public_key, authorization.options):
        builder = builder.add_extension(value, critical=critical)
    if names:
        # RFC 5280 4.2.1.6: with an empty subject the SAN extension must be critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=len(subject) == 0
        )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    ).add_extension(x509.AuthorityKeyIdentifier(issuer.key_id, None, None), critical=False)
    for value, critical in ca_pointer_extensions(
        issuer.urls, policies=(*issuer.policies, *authorization.policies)
    ):
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer.private_key, signature_hash_for(issuer.private_key))


def validity_for(
    authorization: Authorization, issuer_certificate: x509.Certificate, *, now: datetime
) -> tuple[datetime, datetime]:
    """(not_before, not_after) for the authorization, bounded by the issuer's validity.

    An explicitly requested end past the issuer's not_after is refused; the default lifetime
    is shortened to the issuer's not_after instead, so that issuance keeps working (with
    shorter certificates) while a CA nears its end.
    """
    now = now.replace(microsecond=0)
    issuer_end = issuer_certificate.not_valid_after_utc
    not_after = resolve_not_after(now, authorization.lifetime, requested=authorization.requested)
    if not_after > issuer_end:
        if authorization.requested is not None:
            raise LifetimeNotAllowed(
                f"requested not_after {not_after:%Y-%m-%d %H:%M:%SZ} is past the issuing CA's "
                f"not_after {issuer_end:%Y-%m-%d %H:%M:%SZ}",
            )
        not_after = issuer_end
        if not_after - now < authorization.lifetime.minimum:
            raise LifetimeNotAllowed(
                "the issuing CA expires too soon to issue a certificate of the minimum lifetime "
                f"({format_duration(authorization.lifetime.minimum)}): rotate the CA"
            )
    not_before = max(now - BACKDATE, issuer_certificate.not_valid_before_utc)
    return not_before, not_after


def ca_pointer_extensions(
    urls: CAUrls, *, policies: Sequence[str] = ()
) -> list[tuple[x509.ExtensionType, bool]]:
    """CRL distribution point, AIA (OCSP, caIssuers) and certificate policies, as configured."""
    result: list[tuple[x509.ExtensionType, bool]] = []
    if urls.crl:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        result.append((x509.CRLDistributionPoints([point]), False))
    access = []
    if urls.ocsp:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)
            )
        )
    if urls.ca_issuers:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(urls.ca_issuers),
            )
        )
    if access:
        result.append((x509.AuthorityInformationAccess(access), False))
    unique = list(dict.fromkeys(policies))
    if unique:
        result.append(
            (
                x509.CertificatePolicies(
                    [x509.PolicyInformation(ObjectIdentifier(oid), None) for oid in unique]
                ),
                False,
            )
        )
    return result


def subject_for(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
