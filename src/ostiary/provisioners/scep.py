"""SCEP enrollment (provisioner type ``scep``): a challenge password proves who may enroll.

The device makes its key and sends a CSR carrying a challenge password (``docs/mdm.md``):

- ``one-time`` (the default): ``ostiary ca scep challenge`` makes a challenge bound to a
  subject and SANs, valid for a while and for one request. The certificate carries *those*
  names: the CSR may ask for them or fewer, never for others (the one pipeline's rule).
  Only the challenge's SHA-256 is stored; it is spent by a conditional ``UPDATE`` in the
  same transaction that records the device's transaction, so it works once on any replica.
- ``static``: one shared secret for every device (what some MDMs can only do). Whoever
  knows it gets a certificate, so the names come from the CSR *within the provisioner's
  allowed-name patterns*, which are then required.

The provisioner also holds the RSA RA certificate devices encrypt to and whose key signs
the CertReps (issued by our CA; its key sealed with the CA password like a ``jwk`` key).
``require_approval`` makes a request wait for an officer (the ``approval`` flow's queue);
the device polls and collects the certificate.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID

from ostiary.authority.authority import Authority
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest, Conflict, NotFound, Unauthorized
from ostiary.core.issuance import Authorization, subject_for
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import format_general_name, parse_san, parse_subject
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    check_profile,
    precheck_request,
    validate_provisioner_name,
)
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.signers.files import decrypt_private_key_pem, encrypt_private_key_pem
from ostiary.store import AuditLog, ProvisionerRepository, Store

SCEP_TYPE = "scep"
ChallengeKind = Literal["one-time", "static"]
CHALLENGE_KINDS: tuple[ChallengeKind, ...] = ("one-time", "static")
#: How long the RA certificate lives; ``provisioner add`` again makes a new one.
RA_LIFETIME = timedelta(days=365)
MAX_CHALLENGE_TTL = timedelta(days=30)
#: RSA keys below this are refused (iOS asks for 1024 unless its profile says otherwise).
MIN_RSA_BITS = 2048

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScepProvisioner:
    """The settings of a ``scep`` provisioner (its record's ``config``)."""

    name: str
    claims: ProvisionerClaims
    ra_certificate_pem: str
    encrypted_ra_key: str
    profile: str = "client"
    challenge: ChallengeKind = "one-time"
    require_approval: bool = False
    #: SHA-256 hex of the static challenge (``challenge == "static"`` only).
    static_challenge_sha256: str | None = None

    @property
    def type(self) -> str:
        return SCEP_TYPE

    @property
    def ra_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ra_certificate_pem.encode("ascii"))

    def load_ra_key(self, password: bytes) -> rsa.RSAPrivateKey:
        key = decrypt_private_key_pem(self.encrypted_ra_key.encode("ascii"), password)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise BadRequest(f"provisioner {self.name!r} has no RSA RA key")
        return key

    def to_config(self) -> dict[str, Any]:
        return {
            "claims": self.claims.to_config(),
            "profiles": [self.profile],
            "profile": self.profile,
            "challenge": self.challenge,
            "require_approval": self.require_approval,
            "static_challenge_sha256": self.static_challenge_sha256,
            "ra_certificate": self.ra_certificate_pem,
            "encrypted_key": self.encrypted_ra_key,
        }

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> ScepProvisioner:
        try:
            challenge = str(config["challenge"])
            if challenge not in CHALLENGE_KINDS:
                raise KeyError("challenge")
            return cls(
                name=name,
                claims=ProvisionerClaims.from_config(config["claims"]),
                ra_certificate_pem=str(config["ra_certificate"]),
                encrypted_ra_key=str(config["encrypted_key"]),
                profile=str(config["profile"]),
                challenge=challenge,
                require_approval=bool(config["require_approval"]),
                static_challenge_sha256=config.get("static_challenge_sha256"),
            )
        except (KeyError, TypeError):
            raise BadRequest(f"provisioner {name!r} has an incomplete scep config") from None


def _digest(challenge: str) -> str:
    return hashlib.sha256(challenge.encode("utf-8")).hexdigest()


def add_scep_provisioner(
    authority: Authority,
    name: str,
    *,
    password: bytes,
    claims: ProvisionerClaims,
    profile: str = "client",
    challenge: ChallengeKind = "one-time",
    require_approval: bool = False,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
) -> tuple[ScepProvisioner, str | None]:
    """Record a ``scep`` provisioner with a new RA certificate; the static challenge (made
    here, shown once) is returned for ``challenge="static"``.
    """
    validate_provisioner_name(name)
    check_profile(profile, LEAF_PROFILES)
    if challenge not in CHALLENGE_KINDS:
        raise BadRequest(f"unknown challenge kind {challenge!r}: use one-time or static")
    if challenge == "static" and not claims.allowed_names:
        raise BadRequest(
            "a static challenge lets every holder choose the names in its CSR: give the "
            "names it may ask for with --allow-name"
        )
    if ca_claims is not None:
        claims.check_within(ca_claims)
    now = authority.clock()
    with authority.store.transaction(read_only=True) as session:
        try:
            ProvisionerRepository(session).get(name)
        except NotFound:
            pass
        else:
            raise Conflict(f"a provisioner named {name!r} exists already", name=name)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ra = authority.issue_for_key(
        key.public_key(),
        Authorization(
            subject=subject_for(f"{name} SCEP RA"),
            names=(),
            profile="scep-ra",
            lifetime=Lifetime(RA_LIFETIME, RA_LIFETIME, RA_LIFETIME),
            provisioner=name,
        ),
        actor=actor,
        event="certificate.issued",
        details={"purpose": "scep-ra"},
    )
    static = secrets.token_hex(20) if challenge == "static" else None
    provisioner = ScepProvisioner(
        name=name,
        claims=claims,
        ra_certificate_pem=ra.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        encrypted_ra_key=encrypt_private_key_pem(key, password).decode("ascii"),
        profile=profile,
        challenge=challenge,
        require_approval=require_approval,
        static_challenge_sha256=_digest(static) if static is not None else None,
    )
    config = provisioner.to_config()
    with authority.store.transaction() as session:
        ProvisionerRepository(session).add(name, type=SCEP_TYPE, config=config, now=now)
        audited = {k: v for k, v in config.items() if k not in ("encrypted_key", "ra_certificate")}
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=name,
            details={"type": SCEP_TYPE, "ra_serial": serial_hex(ra.serial_number), **audited},
        )
    return provisioner, static


def load_scep_provisioner(store: Store, name: str) -> ScepProvisioner:
    """The ``scep`` provisioner ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    from ostiary.provisioners.manage import load_provisioner_of_type

    return load_provisioner_of_type(store, name, SCEP_TYPE, ScepProvisioner.from_config)


# --------------------------------------------------------------------------- challenges


@dataclass(frozen=True)
class Challenge:
    """A one-time challenge as made: the secret (shown once) and what it grants."""

    value: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    expires_at: datetime


def make_challenge(
    store: Store,
    provisioner_name: str,
    *,
    subject: str,
    sans: tuple[str, ...] = (),
    ttl: timedelta,
    now: datetime,
    actor: str | None = None,
) -> Challenge:
    """A one-time challenge for ``provisioner_name`` bound to ``subject`` and ``sans``.

    The names are checked now as issuance will check them (profile, allowed names), so a
    challenge that could never enroll is not handed out.
    """
    from ostiary.store import ScepRepository

    provisioner = load_scep_provisioner(store, provisioner_name)
    if provisioner.challenge != "one-time":
        raise BadRequest(
            f"provisioner {provisioner_name!r} uses a {provisioner.challenge} challenge"
        )
    if not timedelta(minutes=1) <= ttl <= MAX_CHALLENGE_TTL:
        raise BadRequest("a challenge lives between 1m and 30d")
    authorization = _authorization(provisioner, subject, list(sans))
    names = [format_general_name(n) for n in authorization.names]
    value = secrets.token_hex(20)  # 160 bits; hex, so no shell or getopt ever misreads it
    with store.transaction() as session:
        ScepRepository(session).add_challenge(
            value,
            provisioner=provisioner.name,
            subject=authorization.subject.rfc4514_string(),
            sans=names,
            now=now,
            expires_at=now + ttl,
        )
        AuditLog(session).append(
            "scep.challenge.created",
            at=now,
            actor=actor,
            target=provisioner.name,
            details={"subject": authorization.subject.rfc4514_string(), "san": names},
        )
    return Challenge(
        value, provisioner.name, authorization.subject.rfc4514_string(), tuple(names), now + ttl
    )


def _authorization(provisioner: ScepProvisioner, subject: str, sans: list[str]) -> Authorization:
    """The authorization for these names, within the provisioner's claims and profile."""
    from ostiary.core.profiles import get_profile

    parsed_subject = parse_subject(subject)
    names = tuple(parse_san(text) for text in sans)
    check_allowed_names(parsed_subject, names, provisioner.claims.allowed_names)
    get_profile(provisioner.profile).check_names(list(names))
    return Authorization(
        subject=parsed_subject,
        names=names,
        profile=provisioner.profile,
        lifetime=provisioner.claims.lifetime,
        provisioner=provisioner.name,
    )


def queued_authorization(
    store: Store, provisioner_name: str, subject: str, sans: list[str]
) -> Authorization:
    """What an officer's approval of a queued SCEP request issues: the granted names."""
    return _authorization(load_scep_provisioner(store, provisioner_name), subject, sans)


def challenge_of(csr: x509.CertificateSigningRequest) -> str:
    """The CSR's challengePassword; :class:`Unauthorized` when it has none."""
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        raise Unauthorized("the request carries no challenge password") from None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if not text:
        raise Unauthorized("the request carries an empty challenge password")
    return text


def authorize_challenge(
    store: Store,
    provisioner: ScepProvisioner,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
) -> tuple[Authorization, str | None]:
    """What the CSR's challenge grants, checked as issuance will check it, and the digest of
    the one-time challenge to spend (None for a static one). Nothing is spent here.
    """
    from ostiary.store import ScepRepository

    given = challenge_of(csr)
    if provisioner.challenge == "static":
        expected = provisioner.static_challenge_sha256 or ""
        if not hmac.compare_digest(_digest(given), expected):
            raise Unauthorized("the challenge password is wrong")
        from ostiary.provisioners.approval import csr_authorization

        authorization = csr_authorization(
            csr,
            profile=provisioner.profile,
            claims=provisioner.claims,
            provisioner=provisioner.name,
        )
        precheck_request(csr, authorization, ca=ca, now=now)
        return authorization, None
    with store.transaction(read_only=True) as session:
        row = ScepRepository(session).find_challenge(provisioner.name, given)
        if row is None:
            raise Unauthorized("the challenge password is wrong")
        if row.used_at is not None:
            raise Unauthorized("the challenge password was used already: challenges are one-time")
        if row.expires_at <= now:
            raise Unauthorized("the challenge password expired: ask for a new one")
        subject, sans, digest = row.subject, list(row.sans), row.challenge_sha256
    authorization = _authorization(provisioner, subject, sans)
    precheck_request(csr, authorization, ca=ca, now=now)
    return authorization, digest


def check_key_size(csr: x509.CertificateSigningRequest) -> None:
    """Refuse RSA keys under :data:`MIN_RSA_BITS` (iOS's default is 1024)."""
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise BadRequest(
            f"the request's RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are "
            "needed (an Apple profile must set Keysize 2048)"
        )


__all__ = [
    "CHALLENGE_KINDS",
    "SCEP_TYPE",
    "Challenge",
    "ScepProvisioner",
    "add_scep_provisioner",
    "authorize_challenge",
    "check_key_size",
    "load_scep_provisioner",
    "make_challenge",
    "queued_authorization",
]
