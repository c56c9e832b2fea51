"""Renewal: the current certificate is the credential, and the template of the next one.

A renewed certificate carries the same subject, SANs, profile, policies (while the key stays
the same) and provisioner as the current one, read back from the certificate and its store
record; it lives as long as the current one did (as step-ca does), kept within the claims of
the provisioner that issued it (the CA-wide claims for offline-signed ones).
It is refused when that provisioner does not allow renewal, was removed, or when the
certificate is revoked, not yet valid, or expired (unless renewal after expiry is allowed,
and then only within the provisioner's window).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy.orm import Session

from ostiary.core.ca import issued_by
from ostiary.core.errors import (
    InvalidCertificate,
    NotFound,
    PolicyDenied,
    RevokedCertificate,
)
from ostiary.core.issuance import BACKDATE, Authorization, check_requested_names, verify_csr
from ostiary.core.keys import check_public_key
from ostiary.core.lifetime import format_duration
from ostiary.core.names import sans_of
from ostiary.core.profiles import SMART_CARD_LOGON_OID, ProfileOptions
from ostiary.provisioners.base import CAIdentity, ProvisionerClaims
from ostiary.provisioners.manage import claims_for_certificate
from ostiary.store import (
    CertificateRecord,
    CertificateRepository,
    CertificateStatus,
    ProvisionerRepository,
    Store,
)


def renewal_authorization(
    store: Store,
    certificate: x509.Certificate,
    *,
    now: datetime,
    csr: x509.CertificateSigningRequest | None = None,
    ca: CAIdentity | None = None,
) -> tuple[Authorization, CertificatePublicKeyTypes]:
    """What a renewal of ``certificate`` may be, and the public key it is for.

    With ``csr`` (a key change) the CSR must verify and ask for no other names; its key is
    returned. Without, the current key is returned (checked against today's key rules). Issue
    with :meth:`ostiary.authority.authority.Authority.renew`.
    ``ca`` adds a check that the certificate was signed by one of ``ca.issuers`` and supplies
    the CA-wide claims for offline-signed certificates (default claims otherwise).
    """
    with store.transaction(read_only=True) as session:
        record = find_issued_certificate(session, certificate, ca=ca)
        claims = check_renewable(session, record, certificate, ca=ca, now=now)
        if csr is not None:
            _refuse_rekey_of_attested(session, record)
    original = certificate.not_valid_after_utc - certificate.not_valid_before_utc - BACKDATE
    lifetime = claims.lifetime
    same_duration = min(max(original, lifetime.minimum), lifetime.maximum)
    authorization = Authorization(
        subject=certificate.subject,
        names=tuple(sans_of(certificate.extensions)),
        profile=record.profile,
        lifetime=lifetime,
        requested=None if same_duration == lifetime.default else same_duration,
        policies=_policies_of(certificate),
        options=ProfileOptions(smart_card_logon=_has_smart_card_logon(certificate)),
        provisioner=record.provisioner,
    )
    if csr is not None:
        # A new key: policies the old key earned (say, "hardware-bound" from an attestation)
        # do not carry over; the issuing CA adds its own policies to every certificate anyway.
        authorization = replace(authorization, policies=())
        public_key = verify_csr(csr)
        check_requested_names(csr, authorization)
        return authorization, public_key
    return authorization, check_public_key(certificate.public_key())


def _refuse_rekey_of_attested(session: Session, record: CertificateRecord) -> None:
    """A certificate whose key a TPM attested renews with that key only: a new key would
    need its own attestation (request a new certificate for it).
    """
    if record.provisioner is None:
        return
    try:
        provisioner = ProvisionerRepository(session).get(record.provisioner)
    except NotFound:
        return
    if provisioner.type == "attest" or provisioner.config.get("require_attestation"):
        raise PolicyDenied(
            f"provisioner {record.provisioner!r} requires an attested key: renew with the same "
            "key (no --rekey), or request a new certificate with a new attestation",
            serial=record.serial,
        )


def find_issued_certificate(
    session: Session, certificate: x509.Certificate, *, ca: CAIdentity | None
) -> CertificateRecord:
    """The store record of ``certificate`` (by SHA-256 fingerprint): proof we issued it.

    With ``ca``, its signature must also verify with one of ``ca.issuers``' keys.
    """
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    try:
        record = CertificateRepository(session).by_fingerprint(fingerprint)
    except NotFound:
        raise InvalidCertificate("the certificate was not issued by this CA") from None
    if ca is not None and not issued_by(certificate, ca.issuers):
        raise InvalidCertificate("the certificate was not signed by this CA's issuing key")
    if record.status == CertificateStatus.REVOKED:
        raise RevokedCertificate(
            f"certificate {record.serial} is revoked ({record.revocation_reason})",
            serial=record.serial,
        )
    return record


def check_renewable(
    session: Session,
    record: CertificateRecord,
    certificate: x509.Certificate,
    *,
    ca: CAIdentity | None,
    now: datetime,
) -> ProvisionerClaims:
    """The claims governing the renewal; refuse if they do not allow it at ``now``."""
    claims = claims_for_certificate(session, record.provisioner, ca=ca)
    if not claims.allow_renewal:
        raise PolicyDenied(
            f"provisioner {record.provisioner or 'offline'!r} does not allow renewal",
            serial=record.serial,
        )
    check_certificate_time(certificate, now=now, renewal=claims)
    return claims


def check_certificate_time(
    certificate: x509.Certificate, *, now: datetime, renewal: ProvisionerClaims | None = None
) -> None:
    """Refuse a certificate outside its validity at ``now``.

    With ``renewal`` claims, an expired certificate passes while renewal after expiry is
    allowed and ``now`` is within the window after its not_after.
    """
    serial = f"{certificate.serial_number:x}"
    if now < certificate.not_valid_before_utc:
        raise InvalidCertificate(
            f"certificate {serial} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}",
            serial=serial,
        )
    not_after = certificate.not_valid_after_utc
    if now <= not_after:
        return
    if renewal is None or not renewal.allow_renewal_after_expiry:
        raise InvalidCertificate(
            f"certificate {serial} expired at {not_after:%Y-%m-%d %H:%M:%SZ}"
            + (" and renewal after expiry is not allowed" if renewal is not None else ""),
            serial=serial,
        )
    if now - not_after > renewal.renew_after_expiry_window:
        raise InvalidCertificate(
            f"certificate {serial} expired at {not_after:%Y-%m-%d %H:%M:%SZ}, more than "
            f"{format_duration(renewal.renew_after_expiry_window)} ago: too late to renew",
            serial=serial,
        )


def _policies_of(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies)
    except x509.ExtensionNotFound:
        return ()
    return tuple(p.policy_identifier.dotted_string for p in policies.value)


def _has_smart_card_logon(certificate: x509.Certificate) -> bool:
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return False
    return SMART_CARD_LOGON_OID in usages.value
