"""A signed Apple profile for one person's phone: the ``/enroll`` page's and
``ostiary ca enroll-profile apple``'s one recipe.

:func:`make_phone_profile` makes the one-time secret the phone enrolls with, bound to the
person's names (a SCEP challenge, or an ACME ClientIdentifier where the target is an
``acme`` provisioner with device-attest-01), puts it in a profile
(:mod:`ostiary.apple.profile`) with our root, and signs it.

The signer is a certificate of our CA made for the purpose (:func:`issue_profile_signer`):
an RSA 2048 key (the signature every iOS version verifies), profile ``profile-signing``
(KU digitalSignature, EKU emailProtection, the usage ``openssl smime -verify`` checks), 30
days; or one the admin brings (``--sign-cert/--sign-key``, say the gateway's public TLS
certificate, which phones trust without our root). iOS shows a profile as "Verified" only
when the signer chains to a root it trusts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ostiary.apple.profile import (
    AcmePayload,
    PhoneProfileSpec,
    ScepPayload,
    build_profile,
    sign_profile,
)
from ostiary.authority.authority import Authority
from ostiary.core.issuance import Authorization, subject_for
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import common_name, parse_san, parse_subject
from ostiary.provisioners.enrollment import Target, make_client_id
from ostiary.provisioners.scep import make_challenge

SIGNER_LIFETIME = timedelta(days=30)
#: How long the secret inside a profile from the page may wait for the phone.
PAGE_SECRET_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class ProfileSigner:
    """The certificate and key that sign profiles, and the chain sent along."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()


def issue_profile_signer(authority: Authority, *, actor: str | None) -> ProfileSigner:
    """A fresh profile-signing certificate of our CA (see the module docstring)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = common_name(authority.ca.root.subject) or "Ostiary"
    certificate = authority.issue_for_key(
        key.public_key(),
        Authorization(
            subject=subject_for(f"{ca_name[:40]} configuration profiles"),
            names=(),
            profile="profile-signing",
            lifetime=Lifetime(SIGNER_LIFETIME, SIGNER_LIFETIME, SIGNER_LIFETIME),
        ),
        actor=actor,
        event="certificate.issued",
        details={"purpose": "profile-signing"},
    )
    return ProfileSigner(certificate, key, (authority.ca.intermediate,))


@dataclass(frozen=True)
class PhoneProfile:
    """A signed profile and what is inside it (for the page and the CLI to say)."""

    data: bytes
    kind: str
    subject: str
    sans: tuple[str, ...]
    expires_at: datetime


def make_phone_profile(
    authority: Authority,
    target: Target,
    *,
    subject: str,
    sans: tuple[str, ...],
    scep_base_url: str,
    https_base_url: str,
    signer: ProfileSigner,
    now: datetime,
    actor: str | None,
    ttl: timedelta = PAGE_SECRET_TTL,
    exchange_host: str | None = None,
) -> PhoneProfile:
    """Make the one-time secret for these names, the profile around it, and sign it.

    ``scep_base_url`` is where SCEP is served (plain HTTP is fine: SCEP's messages are
    signed and encrypted); ``https_base_url`` the HTTPS server (Apple's ACME payload
    requires an https ``DirectoryURL``).
    """
    ca_name = common_name(authority.ca.root.subject) or "Ostiary"
    credential: ScepPayload | AcmePayload
    if target.kind == "scep":
        challenge = make_challenge(
            authority.store, target.name, subject=subject, sans=sans, ttl=ttl, now=now,
            actor=actor,
        )  # fmt: skip
        bound_subject, bound_sans, expires_at = (
            challenge.subject,
            challenge.sans,
            challenge.expires_at,
        )
        credential = ScepPayload(
            url=f"{scep_base_url.rstrip('/')}/scep/{target.name}",
            challenge=challenge.value,
            ca_name=ca_name,
            subject=parse_subject(bound_subject),
            names=tuple(parse_san(text) for text in bound_sans),
        )
    else:
        made = make_client_id(
            authority.store, target, subject=subject, sans=sans, ttl=ttl, now=now, actor=actor
        )
        bound_subject, bound_sans, expires_at = made.subject, made.sans, made.expires_at
        credential = AcmePayload(
            directory_url=f"{https_base_url.rstrip('/')}/acme/{target.name}/directory",
            client_identifier=made.value,
            subject=parse_subject(bound_subject),
            names=tuple(parse_san(text) for text in bound_sans),
        )
    spec = PhoneProfileSpec(
        identifier=f"org.ostiary.enroll.{target.name}",
        display_name=f"{ca_name} certificate for {common_name(credential.subject) or 'you'}",
        organization=ca_name,
        root=authority.ca.root,
        credential=credential,
        exchange_host=exchange_host,
    )
    signed = sign_profile(build_profile(spec), signer.certificate, signer.key, signer.chain)
    return PhoneProfile(signed, target.kind, bound_subject, tuple(bound_sans), expires_at)


__all__ = [
    "PAGE_SECRET_TTL",
    "SIGNER_LIFETIME",
    "PhoneProfile",
    "ProfileSigner",
    "issue_profile_signer",
    "make_phone_profile",
]
