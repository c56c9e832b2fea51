"""``acme`` provisioners: a client proves control of each identifier (RFC 8555).

The provisioner says which challenges prove control, which Ostiary profiles a client may
ask for by name (draft-ietf-acme-profiles: the directory's ``meta.profiles``; a client
certificate is asked for, never guessed from the identifiers), which names may be ordered
(the claims' allowed-name patterns) and how long certificates live. Once every
authorization of an order is valid, :meth:`AcmeProvisioner.authorize_order` turns the
order into the :class:`~ostiary.core.issuance.Authorization` the one pipeline issues from;
a key a device attested (device-attest-01) adds the hardware policy OID, as the ``attest``
provisioner's certificates carry it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ostiary.core.errors import BadRequest, MalformedInput, NotFound
from ostiary.core.issuance import Authorization
from ostiary.core.names import permanent_identifier_name
from ostiary.provisioners.base import (
    ProvisionerClaims,
    check_profile,
    validate_provisioner_name,
)
from ostiary.provisioners.manage import record_provisioner
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.store import ProvisionerRepository, Store

#: The provisioner type, as stored in the record.
ACME_TYPE = "acme"
#: Challenge types the server knows (a provisioner enables a subset).
CHALLENGE_TYPES: tuple[str, ...] = ("http-01", "dns-01", "tls-alpn-01", "device-attest-01")
DEFAULT_CHALLENGES: tuple[str, ...] = ("http-01", "dns-01", "tls-alpn-01")
ATTESTATION_FORMATS: tuple[str, ...] = ("tpm", "apple")
#: Profiles an ACME order may name (``user`` certificates name people: not by ACME).
ACME_PROFILES: tuple[str, ...] = ("client", "server", "device")
#: Identifier types and the challenges that may prove each (RFC 8555, 8737, 8738,
#: draft-ietf-acme-device-attest); a wildcard ``dns`` name only through dns-01.
CHALLENGES_FOR: Mapping[str, tuple[str, ...]] = {
    "dns": ("http-01", "dns-01", "tls-alpn-01"),
    "ip": ("http-01", "tls-alpn-01"),
    "permanent-identifier": ("device-attest-01",),
    "hardware-module": ("device-attest-01",),
}

#: Identifiers proved but not written into the certificate: ``hardware-module``, whose
#: value is the module's serial number, in the draft's privacy-preserving form (the
#: certificate names the device by its permanent identifier, ordered with it).
UNNAMED_IDENTIFIER_TYPES: tuple[str, ...] = ("hardware-module",)

DEFAULT_ORDERS_PER_HOUR = 300
DEFAULT_PENDING_AUTHORIZATIONS = 300

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*)){1,30}")


@dataclass(frozen=True)
class AcmeProvisioner:
    """An ``acme`` provisioner's settings."""

    name: str
    claims: ProvisionerClaims
    challenges: tuple[str, ...] = DEFAULT_CHALLENGES
    profiles: tuple[str, ...] = ("server",)
    default_profile: str = "server"
    attestation_roots: str | None = None
    attestation_formats: tuple[str, ...] = ATTESTATION_FORMATS
    policy_oid: str | None = None
    #: New orders one account may place in an hour (``rateLimited`` past it).
    orders_per_hour: int = DEFAULT_ORDERS_PER_HOUR
    #: Unexpired pending authorizations one account may hold (``rateLimited`` past it).
    max_pending_authorizations: int = DEFAULT_PENDING_AUTHORIZATIONS
    #: newAccount must carry an External Account Binding (``ostiary ca acme eab add``).
    require_eab: bool = False

    def __post_init__(self) -> None:
        validate_provisioner_name(self.name)
        if not 1 <= self.orders_per_hour <= 100_000:
            raise BadRequest("orders per hour must be between 1 and 100000")
        if not 1 <= self.max_pending_authorizations <= 100_000:
            raise BadRequest("pending authorizations must be between 1 and 100000")
        for challenge in self.challenges:
            if challenge not in CHALLENGE_TYPES:
                raise BadRequest(
                    f"unknown challenge {challenge!r} (known: {', '.join(CHALLENGE_TYPES)})"
                )
        if not self.challenges:
            raise BadRequest("an acme provisioner needs at least one challenge type")
        if not self.profiles:
            raise BadRequest("an acme provisioner needs at least one profile")
        for profile in self.profiles:
            check_profile(profile, ACME_PROFILES)
        check_profile(self.default_profile, self.profiles)
        for form in self.attestation_formats:
            if form not in ATTESTATION_FORMATS:
                raise BadRequest(f"unknown attestation format {form!r} (known: tpm, apple)")
        if self.policy_oid is not None and not _OID.fullmatch(self.policy_oid):
            raise BadRequest(f"not a dotted policy OID: {self.policy_oid[:64]!r}")
        if "device-attest-01" in self.challenges and self.policy_oid is None:
            raise BadRequest(
                "device-attest-01 needs --policy-oid: the OID certificates of attested "
                "hardware keys carry (the attest provisioner's, for the same gateway routes)"
            )

    @property
    def type(self) -> str:
        return ACME_TYPE

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> AcmeProvisioner:
        try:
            return cls(
                name=name,
                claims=ProvisionerClaims.from_config(config["claims"]),
                challenges=tuple(config["challenges"]),
                profiles=tuple(config["profiles"]),
                default_profile=str(config["default_profile"]),
                attestation_roots=config.get("attestation_roots"),
                attestation_formats=tuple(config.get("attestation_formats", ())),
                policy_oid=config.get("policy_oid"),
                orders_per_hour=int(config.get("orders_per_hour", DEFAULT_ORDERS_PER_HOUR)),
                max_pending_authorizations=int(
                    config.get("max_pending_authorizations", DEFAULT_PENDING_AUTHORIZATIONS)
                ),
                require_eab=bool(config.get("require_eab", False)),
            )
        except (KeyError, TypeError, ValueError, BadRequest):
            raise MalformedInput(
                f"provisioner {name!r}: its stored configuration is damaged"
            ) from None

    def to_config(self) -> dict[str, Any]:
        return {
            "challenges": list(self.challenges),
            "profiles": list(self.profiles),
            "default_profile": self.default_profile,
            "attestation_roots": self.attestation_roots,
            "attestation_formats": list(self.attestation_formats),
            "policy_oid": self.policy_oid,
            "orders_per_hour": self.orders_per_hour,
            "max_pending_authorizations": self.max_pending_authorizations,
            "require_eab": self.require_eab,
            "claims": self.claims.to_config(),
        }

    def challenges_for(self, identifier_type: str, *, wildcard: bool) -> tuple[str, ...]:
        """The enabled challenge types that can prove an identifier of this type."""
        possible = ("dns-01",) if wildcard else CHALLENGES_FOR.get(identifier_type, ())
        return tuple(c for c in possible if c in self.challenges)

    def authorize_order(
        self,
        identifiers: Sequence[Mapping[str, str]],
        *,
        profile: str,
        not_after: datetime | None,
        hardware_key: bool = False,
        bound_names: tuple[x509.Name, tuple[x509.GeneralName, ...]] | None = None,
    ) -> Authorization:
        """The authorization of a ready order: its identifiers as SANs, its profile; or,
        for an order whose identifier was a ClientIdentifier we issued, the names bound to it
        (``bound_names``, :mod:`ostiary.provisioners.enrollment`).
        """
        if bound_names is not None:
            subject, names = bound_names
        else:
            names = tuple(
                general_name_of(i["type"], i["value"])
                for i in identifiers
                if i["type"] not in UNNAMED_IDENTIFIER_TYPES
            )
            first = next(
                (
                    i["value"]
                    for i in identifiers
                    if i["type"] in ("dns", "ip") and len(i["value"]) <= 64
                ),
                None,
            )
            subject = x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, first)] if first is not None else []
            )
        check_allowed_names(subject, names, self.claims.allowed_names)
        policies = (self.policy_oid,) if hardware_key and self.policy_oid else ()
        return Authorization(
            subject=subject,
            names=names,
            profile=check_profile(profile, self.profiles),
            lifetime=self.claims.lifetime,
            requested=not_after,
            policies=policies,
            provisioner=self.name,
        )


def general_name_of(identifier_type: str, value: str) -> x509.GeneralName:
    """The SAN an ACME identifier becomes; :class:`BadRequest` for an unusable one."""
    if identifier_type == "dns":
        return x509.DNSName(value.lower())
    if identifier_type == "ip":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            raise BadRequest(f"not an IP address: {value[:64]!r}") from None
    if identifier_type == "permanent-identifier":
        identifier, _, assigner = value.partition("/")
        return permanent_identifier_name(identifier, assigner or None)
    raise BadRequest(f"identifier type {identifier_type[:32]!r} is not supported")


def add_acme_provisioner(
    store: Store,
    provisioner: AcmeProvisioner,
    *,
    now: datetime,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
) -> AcmeProvisioner:
    """Record ``provisioner`` with a "provisioner.added" entry; :class:`Conflict` if taken."""
    if ca_claims is not None:
        provisioner.claims.check_within(ca_claims)
    config = provisioner.to_config()
    record_provisioner(
        store,
        provisioner.name,
        type=ACME_TYPE,
        config=config,
        audited={k: v for k, v in config.items() if k != "attestation_roots"},
        now=now,
        actor=actor,
    )
    return provisioner


def load_acme_provisioner(store: Store, name: str) -> AcmeProvisioner:
    """The ``acme`` provisioner ``name``; :class:`NotFound` if there is none of that type."""
    validate_provisioner_name(name)
    with store.transaction(read_only=True) as session:
        try:
            record = ProvisionerRepository(session).get(name)
        except NotFound:
            record = None
        if record is None or record.type != ACME_TYPE:
            raise NotFound(f"no ACME provisioner {name!r}")
        return AcmeProvisioner.from_config(record.name, record.config)


def load_acme_provisioner_named(store: Store, issuer: object, *, what: str) -> AcmeProvisioner:
    """:func:`load_acme_provisioner` as a :class:`~ostiary.provisioners.cache.Loader`."""
    if not isinstance(issuer, str):
        raise NotFound(f"{what} names no ACME provisioner")
    return load_acme_provisioner(store, issuer)


__all__ = [
    "ACME_PROFILES",
    "ACME_TYPE",
    "CHALLENGE_TYPES",
    "AcmeProvisioner",
    "add_acme_provisioner",
    "general_name_of",
    "load_acme_provisioner",
    "load_acme_provisioner_named",
]
