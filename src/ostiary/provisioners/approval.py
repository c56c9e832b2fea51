"""Approval enrollment (provisioner type ``approval``): a person looks at the CSR and decides.

For devices that cannot sign in or hold a token. The requester submits a CSR (and a note);
the request waits in the queue (:mod:`.approval_queue`) until an officer approves it, is
rejected, or expires (:mod:`.approval_decisions`). With ``require_code`` the requester is
shown a one-time code that the officer must enter when approving.

This module is the provisioner: its settings and record, and the names a request gets.
Approval issues through :meth:`Authority.issue` (the one pipeline) with an
:class:`~ostiary.core.issuance.Authorization` whose names are exactly the CSR's names, which
the officer was shown: a subject of exactly one common name (a CSR with a second CN, an O
or a multi-valued RDN is refused) and SANs in canonical form, bounded by the provisioner's
claims (allowed names, lifetime) and profile (:func:`csr_authorization`). Every step is
audited: ``request.submitted``, ``request.approved`` (next to the pipeline's
``certificate.issued``), ``request.rejected``, ``request.denied`` (bad code).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ostiary.core.errors import BadRequest, InvalidCSR
from ostiary.core.issuance import Authorization, verify_csr
from ostiary.core.lifetime import format_duration, parse_duration
from ostiary.core.names import (
    canonical_general_name,
    format_general_name,
    requested_subject,
    sans_of,
)
from ostiary.core.profiles import get_profile
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    ProvisionerClaims,
    check_profile,
    validate_provisioner_name,
)
from ostiary.provisioners.officers import check_no_role_names
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.store import AuditLog, ProvisionerRepository, Store

APPROVAL_TYPE = "approval"
DEFAULT_REQUEST_TTL = timedelta(days=7)
#: The longest note (requester) or reason (officer), in characters.
MAX_NOTE = 500


@dataclass(frozen=True)
class ApprovalProvisioner:
    """The settings of an ``approval`` provisioner (kept in its record's ``config``)."""

    name: str
    claims: ProvisionerClaims
    profile: str = "device"
    require_code: bool = True
    request_ttl: timedelta = DEFAULT_REQUEST_TTL
    #: Whether a request may name an officer (else refused: :mod:`.officers`).
    allow_officer_names: bool = False

    @property
    def type(self) -> str:
        return APPROVAL_TYPE

    def to_config(self) -> dict[str, Any]:
        return {
            "claims": self.claims.to_config(),
            "profiles": [self.profile],
            "profile": self.profile,
            "require_code": self.require_code,
            "request_ttl": format_duration(self.request_ttl),
            "allow_officer_names": self.allow_officer_names,
        }

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> ApprovalProvisioner:
        try:
            return cls(
                name=name,
                claims=ProvisionerClaims.from_config(config["claims"]),
                profile=str(config["profile"]),
                require_code=bool(config["require_code"]),
                request_ttl=parse_duration(str(config["request_ttl"])),
                allow_officer_names=bool(config.get("allow_officer_names", False)),
            )
        except (KeyError, TypeError):
            raise BadRequest(f"provisioner {name!r} has an incomplete approval config") from None


# --------------------------------------------------------------------------- record


def add_approval_provisioner(
    store: Store,
    name: str,
    *,
    claims: ProvisionerClaims,
    now: datetime,
    profile: str = "device",
    require_code: bool = True,
    request_ttl: timedelta = DEFAULT_REQUEST_TTL,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
    allow_officer_names: bool = False,
) -> ApprovalProvisioner:
    """Record an ``approval`` provisioner with a "provisioner.added" entry."""
    validate_provisioner_name(name)
    check_profile(profile, LEAF_PROFILES)
    if ca_claims is not None:
        claims.check_within(ca_claims)
    if not timedelta(minutes=5) <= request_ttl <= timedelta(days=90):
        raise BadRequest("the request lifetime must be between 5m and 90d")
    provisioner = ApprovalProvisioner(
        name, claims, profile, require_code, request_ttl, allow_officer_names
    )
    with store.transaction() as session:
        ProvisionerRepository(session).add(
            name, type=APPROVAL_TYPE, config=provisioner.to_config(), now=now
        )
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=name,
            details={"type": APPROVAL_TYPE, **provisioner.to_config()},
        )
    return provisioner


def load_approval_provisioner(store: Store, name: str) -> ApprovalProvisioner:
    """The ``approval`` provisioner ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    from ostiary.provisioners.manage import load_provisioner_of_type

    return load_provisioner_of_type(store, name, APPROVAL_TYPE, ApprovalProvisioner.from_config)


# --------------------------------------------------------------------------- names


def approval_authorization(
    provisioner: ApprovalProvisioner, csr: x509.CertificateSigningRequest
) -> Authorization:
    """The names a request to ``provisioner`` gets: :func:`csr_authorization` with its settings."""
    return csr_authorization(
        csr, profile=provisioner.profile, claims=provisioner.claims, provisioner=provisioner.name
    )


def csr_authorization(
    csr: x509.CertificateSigningRequest,
    *,
    profile: str,
    claims: ProvisionerClaims,
    provisioner: str,
) -> Authorization:
    """The CSR's own subject and names, within the provisioner's claims and profile.

    The subject is exactly one common name (:func:`requested_subject`) and the SANs are
    checked in their canonical form (:func:`canonical_general_name`), the form the
    certificate will carry: the allowed-name patterns never see a raw name from the CSR.
    """
    verify_csr(csr)
    subject = requested_subject(csr.subject)
    try:
        raw = sans_of(csr.extensions)
    except (ValueError, x509.DuplicateExtension):
        raise InvalidCSR("the CSR extensions cannot be parsed") from None
    names = tuple(canonical_general_name(n) for n in raw)
    check_allowed_names(subject, names, claims.allowed_names)
    get_profile(profile).check_names(list(names))
    return Authorization(
        subject=subject,
        names=names,
        profile=profile,
        lifetime=claims.lifetime,
        provisioner=provisioner,
    )


def check_role_names(
    store: Store, provisioner: ApprovalProvisioner, authorization: Authorization
) -> None:
    """Refuse names of role holders unless the provisioner allows them (see :mod:`.officers`)."""
    if not provisioner.allow_officer_names:
        names = [format_general_name(n) for n in authorization.names]
        check_no_role_names(store, authorization.subject, names, provisioner=provisioner.name)


__all__ = [
    "APPROVAL_TYPE",
    "DEFAULT_REQUEST_TTL",
    "MAX_NOTE",
    "ApprovalProvisioner",
    "add_approval_provisioner",
    "approval_authorization",
    "check_role_names",
    "csr_authorization",
    "load_approval_provisioner",
]
