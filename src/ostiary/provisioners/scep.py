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

import functools
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID

from ostiary.authority.authority import Authority
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest, Conflict, NotFound, PolicyDenied, Unauthorized
from ostiary.core.issuance import Authorization, subject_for
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import format_general_name, sans_of
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    check_profile,
    precheck_request,
    validate_provisioner_name,
)
from ostiary.provisioners.grants import (
    MAX_GRANT_TTL,
    FoundGrant,
    Grant,
    find_grant,
    grant_authorization,
    record_grant,
)
from ostiary.provisioners.scep_webhook import ask_webhook, check_webhook_url, read_webhook_roots
from ostiary.signers.files import decrypt_private_key_pem, encrypt_private_key_pem
from ostiary.store import AuditLog, ProvisionerRepository, Store

SCEP_TYPE = "scep"
ChallengeKind = Literal["one-time", "static", "dynamic", "webhook"]
CHALLENGE_KINDS: tuple[ChallengeKind, ...] = ("one-time", "static", "dynamic", "webhook")
#: How long the RA certificate lives; ``provisioner add`` again makes a new one.
RA_LIFETIME = timedelta(days=365)
MAX_CHALLENGE_TTL = MAX_GRANT_TTL
#: How long the CA waits for a challenge webhook's answer, by default (seconds).
DEFAULT_WEBHOOK_TIMEOUT = 10
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
    #: SHA-256 hex of the MDM's secret for the challenge URL (``challenge == "dynamic"``).
    mdm_secret_sha256: str | None = None
    #: The HTTPS URL asked about every request (``challenge == "webhook"``).
    webhook_url: str | None = None
    #: PEM roots the webhook's TLS certificate must chain to (None: the system's).
    webhook_ca_file: str | None = None
    webhook_timeout: int = DEFAULT_WEBHOOK_TIMEOUT

    def __post_init__(self) -> None:
        if self.challenge not in CHALLENGE_KINDS:
            raise BadRequest(
                f"unknown challenge kind {self.challenge!r}: use one-time, static, dynamic or "
                "webhook"
            )
        if self.challenge == "webhook":
            check_webhook_url(self.webhook_url)
            if not 1 <= self.webhook_timeout <= 60:
                raise BadRequest("the webhook timeout is between 1 and 60 seconds")
        elif self.webhook_url is not None or self.webhook_ca_file is not None:
            raise BadRequest("--webhook-url and --webhook-ca-file are for --challenge webhook")
        if self.challenge == "static" and not self.claims.allowed_names:
            raise BadRequest(
                "a static challenge lets every holder choose the names in its CSR: give the "
                "names it may ask for with --allow-name"
            )

    @property
    def type(self) -> str:
        return SCEP_TYPE

    @functools.cached_property
    def ra_certificate(self) -> x509.Certificate:
        """Parsed once per loaded provisioner (the server keeps them: ProvisionerCache)."""
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
            "mdm_secret_sha256": self.mdm_secret_sha256,
            "webhook_url": self.webhook_url,
            "webhook_ca_file": self.webhook_ca_file,
            "webhook_timeout": self.webhook_timeout,
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
                mdm_secret_sha256=config.get("mdm_secret_sha256"),
                webhook_url=config.get("webhook_url"),
                webhook_ca_file=config.get("webhook_ca_file"),
                webhook_timeout=int(config.get("webhook_timeout", DEFAULT_WEBHOOK_TIMEOUT)),
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
    webhook_url: str | None = None,
    webhook_ca_file: str | None = None,
    webhook_timeout: int = DEFAULT_WEBHOOK_TIMEOUT,
) -> tuple[ScepProvisioner, str | None]:
    """Record a ``scep`` provisioner with a new RA certificate; the secret made here and
    shown once is returned: the static challenge (``static``) or the MDM's secret for the
    challenge URL (``dynamic``).
    """
    validate_provisioner_name(name)
    check_profile(profile, LEAF_PROFILES)
    if ca_claims is not None:
        claims.check_within(ca_claims)
    static = secrets.token_hex(20) if challenge == "static" else None
    mdm_secret = secrets.token_hex(20) if challenge == "dynamic" else None
    settings = ScepProvisioner(  # validates the settings before anything is made
        name=name,
        claims=claims,
        ra_certificate_pem="",
        encrypted_ra_key="",
        profile=profile,
        challenge=challenge,
        require_approval=require_approval,
        static_challenge_sha256=_digest(static) if static is not None else None,
        mdm_secret_sha256=_digest(mdm_secret) if mdm_secret is not None else None,
        webhook_url=webhook_url,
        webhook_ca_file=webhook_ca_file,
        webhook_timeout=webhook_timeout,
    )
    if webhook_ca_file is not None:
        read_webhook_roots(webhook_ca_file)
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
    provisioner = replace(
        settings,
        ra_certificate_pem=ra.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        encrypted_ra_key=encrypt_private_key_pem(key, password).decode("ascii"),
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
    return provisioner, static or mdm_secret


def new_secret_settings(provisioner: ScepProvisioner) -> tuple[str, dict[str, str]]:
    """A new secret (shown once) for a ``static`` or ``dynamic`` provisioner, and the
    setting that stores its digest (``provisioner update --new-secret``): the old one stops
    working at once, the RA and the certificates stay.
    """
    secret = secrets.token_hex(20)
    if provisioner.challenge == "static":
        return secret, {"static_challenge_sha256": _digest(secret)}
    if provisioner.challenge == "dynamic":
        return secret, {"mdm_secret_sha256": _digest(secret)}
    raise BadRequest(
        f"provisioner {provisioner.name!r} has a {provisioner.challenge} challenge: "
        "--new-secret is for static and dynamic ones"
    )


def load_scep_provisioner(store: Store, name: str) -> ScepProvisioner:
    """The ``scep`` provisioner ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    from ostiary.provisioners.manage import load_provisioner_of_type

    return load_provisioner_of_type(store, name, SCEP_TYPE, ScepProvisioner.from_config)


# --------------------------------------------------------------------------- challenges


#: A one-time challenge as made: the secret (shown once) and what it grants.
Challenge = Grant


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
    provisioner = load_scep_provisioner(store, provisioner_name)
    if provisioner.challenge not in ("one-time", "dynamic"):
        raise BadRequest(
            f"provisioner {provisioner_name!r} uses a {provisioner.challenge} challenge"
        )
    authorization = grant_authorization(provisioner, subject, list(sans))
    return record_grant(
        store, authorization, ttl=ttl, now=now, actor=actor, event="scep.challenge.created"
    )


def queued_authorization(
    store: Store, provisioner_name: str, subject: str, sans: list[str]
) -> Authorization:
    """What an officer's approval of a queued SCEP request issues: the granted names."""
    return grant_authorization(load_scep_provisioner(store, provisioner_name), subject, sans)


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
    transaction_id: str = "",
    grant: FoundGrant | None = None,
) -> tuple[Authorization, str | None]:
    """What the CSR's challenge grants, checked as issuance will check it, and the digest of
    the one-time challenge to spend (None for a static or webhook one). Nothing is spent here.

    ``grant``: the one-time challenge's grant as the caller found it already
    (:func:`~ostiary.provisioners.grants.grant_of_row`), instead of reading it here.
    """
    given = challenge_of(csr)
    if provisioner.challenge == "webhook":
        verdict = ask_webhook(
            provisioner.webhook_url or "",
            facts_of(provisioner.name, csr, given, transaction_id),
            ca_file=provisioner.webhook_ca_file,
            timeout=provisioner.webhook_timeout,
        )
        authorization = grant_authorization(provisioner, verdict.subject, list(verdict.sans))
        precheck_request(csr, authorization, ca=ca, now=now)
        return authorization, None
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
    found = grant if grant is not None else find_grant(store, provisioner.name, given, now=now)
    authorization = grant_authorization(provisioner, found.subject, found.sans)
    precheck_request(csr, authorization, ca=ca, now=now)
    return authorization, found.digest


def facts_of(
    provisioner: str, csr: x509.CertificateSigningRequest, challenge: str, transaction_id: str
) -> dict[str, Any]:
    """What a challenge webhook is told about a request (docs/mdm.md)."""
    key = csr.public_key()
    try:
        sans = [format_general_name(n) for n in sans_of(csr.extensions)]
    except (ValueError, x509.DuplicateExtension):
        raise BadRequest("the CSR extensions cannot be parsed") from None
    return {
        "provisioner": provisioner,
        "transaction_id": transaction_id,
        "challenge": challenge,
        "subject": csr.subject.rfc4514_string(),
        "san": sans,
        "key_type": _key_type(key),
        "key_size": getattr(key, "key_size", None),
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }


def _key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def make_mdm_challenge(
    store: Store,
    provisioner_name: str,
    secret: str,
    *,
    subject: str,
    sans: tuple[str, ...],
    ttl: timedelta,
    now: datetime,
) -> Challenge:
    """A one-time challenge asked for by the MDM of a ``dynamic`` provisioner, which proves
    itself with the secret ``provisioner add`` showed once (compared in constant time).
    """
    try:
        provisioner = load_scep_provisioner(store, provisioner_name)
    except (NotFound, PolicyDenied):
        provisioner = None
    expected = provisioner.mdm_secret_sha256 if provisioner is not None else None
    matches = hmac.compare_digest(_digest(secret), expected or "0" * 64)
    if provisioner is None or provisioner.challenge != "dynamic" or not matches:
        raise Unauthorized("wrong provisioner or MDM secret for a dynamic challenge")
    return make_challenge(
        store, provisioner_name, subject=subject, sans=sans, ttl=ttl, now=now,
        actor=f"mdm:{provisioner_name}",
    )  # fmt: skip


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
    "facts_of",
    "load_scep_provisioner",
    "make_challenge",
    "make_mdm_challenge",
    "new_secret_settings",
    "queued_authorization",
]
