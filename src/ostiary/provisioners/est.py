"""EST enrollment (provisioner type ``est``, RFC 7030): a one-time code or a certificate.

EST is what network gear and IoT stacks speak (Cisco trustpoints, Aruba switches, Azure IoT
Edge), not phones; they get their own provisioner, so that an admin gives them their own
allowed names, profile (``client`` by default), lifetimes and audit trail, and can remove
it without touching the phones' SCEP. ``docs/mdm.md`` shows it with curl and openssl.

- ``simpleenroll`` with HTTP Basic: the password is a one-time code from
  ``ostiary ca est code``, bound to a subject and SANs (the certificate carries *those*
  names; the CSR may ask for them or fewer). Stored and spent like a SCEP one-time challenge
  (:mod:`ostiary.provisioners.grants`).
- ``simpleenroll`` or ``simplereenroll`` over mTLS with a current certificate this
  provisioner issued: a certificate with the same names, for the CSR's key (new or not).
  RFC 7030 section 4.2.2 asks a re-enrollment for the same subject; the renewal rules
  (:func:`~ostiary.provisioners.renewal.renewal_authorization`) ask for no other name.

Issuance is :meth:`Authority.issue` / :meth:`Authority.renew`, the one pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ostiary.authority.authority import Authority
from ostiary.core.errors import BadRequest, PolicyDenied, Unauthorized
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    check_profile,
    precheck_request,
    validate_provisioner_name,
)
from ostiary.provisioners.grants import (
    Grant,
    find_grant,
    grant_authorization,
    record_grant,
)
from ostiary.provisioners.renewal import renewal_authorization
from ostiary.provisioners.scep import check_key_size
from ostiary.store import AuditLog, Batch, ProvisionerRepository, Store, spend_challenge_in

EST_TYPE = "est"


@dataclass(frozen=True)
class EstProvisioner:
    """The settings of an ``est`` provisioner (its record's ``config``)."""

    name: str
    claims: ProvisionerClaims
    profile: str = "client"

    def __post_init__(self) -> None:
        check_profile(self.profile, LEAF_PROFILES)

    @property
    def type(self) -> str:
        return EST_TYPE

    def to_config(self) -> dict[str, Any]:
        return {
            "claims": self.claims.to_config(),
            "profiles": [self.profile],
            "profile": self.profile,
        }

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> EstProvisioner:
        try:
            return cls(
                name=name,
                claims=ProvisionerClaims.from_config(config["claims"]),
                profile=str(config["profile"]),
            )
        except (KeyError, TypeError):
            raise BadRequest(f"provisioner {name!r} has an incomplete est config") from None


def add_est_provisioner(
    store: Store,
    name: str,
    *,
    claims: ProvisionerClaims,
    profile: str,
    now: datetime,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
) -> EstProvisioner:
    """Record an ``est`` provisioner (:class:`Conflict` if the name is taken)."""
    validate_provisioner_name(name)
    provisioner = EstProvisioner(name=name, claims=claims, profile=profile)
    if ca_claims is not None:
        claims.check_within(ca_claims)
    config = provisioner.to_config()
    with store.transaction() as session:
        ProvisionerRepository(session).add(name, type=EST_TYPE, config=config, now=now)
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=name,
            details={"type": EST_TYPE, **config},
        )
    return provisioner


def load_est_provisioner(store: Store, name: str) -> EstProvisioner:
    """The ``est`` provisioner ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    from ostiary.provisioners.manage import load_provisioner_of_type

    return load_provisioner_of_type(store, name, EST_TYPE, EstProvisioner.from_config)


def make_est_code(
    store: Store,
    provisioner_name: str,
    *,
    subject: str,
    sans: tuple[str, ...] = (),
    ttl: timedelta,
    now: datetime,
    actor: str | None = None,
) -> Grant:
    """A one-time enrollment code bound to ``subject`` and ``sans``, checked now as
    issuance will check them.
    """
    provisioner = load_est_provisioner(store, provisioner_name)
    authorization = grant_authorization(provisioner, subject, list(sans))
    return record_grant(
        store, authorization, ttl=ttl, now=now, actor=actor, event="est.code.created"
    )


def enroll_with_code(
    authority: Authority,
    provisioner: EstProvisioner,
    code: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
) -> x509.Certificate:
    """``simpleenroll`` with a one-time code: the code's names for the CSR's key.

    The code is spent in the issuance's own transaction: a request that is not issued (a
    wrong name, a weak key, an audit log that cannot be written) leaves it usable.
    """
    now = authority.clock()
    found = find_grant(authority.store, provisioner.name, code, now=now)
    check_key_size(csr)
    authorization = grant_authorization(provisioner, found.subject, found.sans)
    precheck_request(csr, authorization, ca=ca, now=now)

    def spend(batch: Batch, _: x509.Certificate) -> None:
        if not spend_challenge_in(batch, found.digest, now=now):
            raise Unauthorized("the enrollment code was used already: it is one-time")

    return authority.issue(
        csr,
        authorization,
        actor=f"provisioner:{provisioner.name}",
        details={"via": "est-code"},
        then=spend,
    )


def enroll_with_certificate(
    authority: Authority,
    provisioner: EstProvisioner,
    current: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    operation: str,
) -> x509.Certificate:
    """``simpleenroll``/``simplereenroll`` over mTLS: the current certificate's names."""
    check_key_size(csr)
    authorization, _ = renewal_authorization(
        authority.store, current, now=authority.clock(), csr=csr, ca=ca
    )
    if authorization.provisioner != provisioner.name:
        raise PolicyDenied(
            f"this certificate was not issued by EST provisioner {provisioner.name!r}"
        )
    return authority.renew(
        current,
        authorization,
        csr.public_key(),
        actor=f"provisioner:{provisioner.name}",
        csr=csr,
        details={"via": f"est-{operation}"},
    )


__all__ = [
    "EST_TYPE",
    "EstProvisioner",
    "add_est_provisioner",
    "enroll_with_certificate",
    "enroll_with_code",
    "load_est_provisioner",
    "make_est_code",
]
