"""``oidc`` provisioners: a person signs in with the company's OpenID provider.

The client runs the authorization-code flow with PKCE against the provider (see
``docs/api.md``) and sends the ID token with its CSR to ``POST /provisioners/{name}/sign``.
The provisioner verifies the token (:mod:`.oidc_id_token`), checks its ``nonce``, made by
the client for the CSR's key (:mod:`.oidc_binding`), so an ID token authorizes exactly one
key, maps the claims to certificate names and applies the domain, group and admin rules
(:mod:`.oidc_identity`), and spends the token once: the ``jti`` if it has one, else its
SHA-256, in the used-tokens table under ``oidc:<provisioner>`` (:mod:`.single_use`).

A user gets exactly their own identity; a CSR asking for anything else is refused. Admins
may ask for other names (within the provisioner's allowed-name patterns) and sign in to the
console.

The client secret of a confidential app stays on the CA: the record keeps only the *path* of
a file holding it (:mod:`.oidc_code_exchange`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy.orm import Session

from ostiary.core.errors import (
    BadRequest,
    MalformedInput,
    NameNotAuthorized,
    NotFound,
    PolicyDenied,
    Unauthorized,
)
from ostiary.core.issuance import Authorization
from ostiary.core.names import (
    canonical_general_name,
    common_name,
    format_general_name,
    requested_subject,
    sans_of,
)
from ostiary.provisioners.base import (
    OIDC_TYPE,
    CAIdentity,
    ProvisionerClaims,
    TokenGrant,
    check_profile,
    precheck_request,
    validate_provisioner_name,
)
from ostiary.provisioners.oidc_binding import check_nonce_for_key
from ostiary.provisioners.oidc_code_exchange import read_client_secret
from ostiary.provisioners.oidc_discovery import (
    ProviderDirectory,
    ProviderMetadata,
    check_provider_url,
    default_directory,
)
from ostiary.provisioners.oidc_id_token import (
    id_token_kept_until,
    id_token_spend_id,
    verify_id_token,
)
from ostiary.provisioners.oidc_identity import check_groups, identity_of, normalize_admin
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.provisioners.single_use import spend_token
from ostiary.store import AuditLog, ProvisionerRepository, Store

#: Profiles an ``oidc`` provisioner may hand out.
OIDC_PROFILES = ("user", "client")
#: Scopes the client asks for.
DEFAULT_SCOPES = ("openid", "email", "profile")
#: Claims that may become a URI SAN.
URI_CLAIMS = ("sub", "oid")

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*)){1,30}")


@dataclass(frozen=True)
class OIDCProvisioner:
    """An ``oidc`` provisioner as configured (no secret: only where to read it)."""

    name: str
    configuration_endpoint: str
    client_id: str
    claims: ProvisionerClaims
    client_secret_file: str | None = None
    tenant_id: str | None = None
    domains: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    profile: str = "user"
    uri_claim: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    provider_ca_file: str | None = None
    policies: tuple[str, ...] = ()
    upn_from_preferred_username: bool = False
    directory: ProviderDirectory = field(default=default_directory, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_provisioner_name(self.name)
        check_provider_url(self.configuration_endpoint)
        if not self.client_id.strip() or len(self.client_id) > 256:
            raise BadRequest("an oidc provisioner needs a client id (at most 256 characters)")
        check_profile(self.profile, OIDC_PROFILES)
        if self.uri_claim is not None and self.uri_claim not in URI_CLAIMS:
            raise BadRequest(f"the URI SAN claim must be one of {', '.join(URI_CLAIMS)}")
        object.__setattr__(self, "domains", tuple(d.strip().lower() for d in self.domains if d))
        object.__setattr__(self, "admins", tuple(normalize_admin(a) for a in self.admins if a))
        object.__setattr__(self, "groups", tuple(g.strip() for g in self.groups if g.strip()))
        for oid in self.policies:
            if not _OID.fullmatch(oid):
                raise BadRequest(f"not a dotted policy OID: {oid[:64]!r}")
        if "openid" not in self.scopes:
            raise BadRequest("the scopes must include 'openid'")

    @property
    def type(self) -> str:
        return OIDC_TYPE

    @property
    def confidential(self) -> bool:
        """Whether the app has a client secret (the CA then redeems codes for clients)."""
        return self.client_secret_file is not None

    @property
    def ca_file(self) -> Path | None:
        return Path(self.provider_ca_file) if self.provider_ca_file else None

    # ----------------------------------------------------------------- record

    @classmethod
    def from_config(
        cls, name: str, config: Mapping[str, Any], *, directory: ProviderDirectory | None = None
    ) -> OIDCProvisioner:
        try:
            return cls(
                name=name,
                configuration_endpoint=str(config["configuration_endpoint"]),
                client_id=str(config["client_id"]),
                claims=ProvisionerClaims.from_config(config["claims"]),
                client_secret_file=config.get("client_secret_file"),
                tenant_id=config.get("tenant_id"),
                domains=tuple(config.get("domains", ())),
                admins=tuple(config.get("admins", ())),
                groups=tuple(config.get("groups", ())),
                profile=str(config.get("profile", "user")),
                uri_claim=config.get("uri_claim"),
                scopes=tuple(config.get("scopes", DEFAULT_SCOPES)),
                provider_ca_file=config.get("provider_ca_file"),
                policies=tuple(config.get("policies", ())),
                upn_from_preferred_username=bool(config.get("upn_from_preferred_username")),
                directory=directory or default_directory,
            )
        except (KeyError, TypeError, AttributeError, BadRequest):
            raise MalformedInput(
                f"provisioner {name!r}: its stored configuration is damaged"
            ) from None

    def to_config(self) -> dict[str, Any]:
        return {
            "configuration_endpoint": self.configuration_endpoint,
            "client_id": self.client_id,
            "client_secret_file": self.client_secret_file,
            "tenant_id": self.tenant_id,
            "domains": list(self.domains),
            "admins": list(self.admins),
            "groups": list(self.groups),
            "profile": self.profile,
            "profiles": [self.profile],
            "uri_claim": self.uri_claim,
            "scopes": list(self.scopes),
            "provider_ca_file": self.provider_ca_file,
            "policies": list(self.policies),
            "upn_from_preferred_username": self.upn_from_preferred_username,
            "claims": self.claims.to_config(),
        }

    def public_info(self) -> dict[str, Any]:
        """What a client needs to start the sign-in (``GET /provisioners/{name}``)."""
        metadata = self.metadata()
        return {
            "name": self.name,
            "type": OIDC_TYPE,
            "configuration_endpoint": self.configuration_endpoint,
            "issuer": metadata.issuer,
            "authorization_endpoint": metadata.authorization_endpoint,
            "token_endpoint": metadata.token_endpoint,
            "client_id": self.client_id,
            "scopes": list(self.scopes),
            "code_exchange": "ca" if self.confidential else "client",
            "profile": self.profile,
        }

    def metadata(self) -> ProviderMetadata:
        return self.directory.metadata(self.configuration_endpoint, ca_file=self.ca_file)

    # ----------------------------------------------------------------- authorizing

    def authorize(
        self,
        token: str,
        csr: x509.CertificateSigningRequest,
        *,
        ca: CAIdentity,
        now: datetime,
        requested_not_after: timedelta | datetime | None = None,
    ) -> TokenGrant:
        """Verify an ID token for ``csr``; what it authorizes and the id to spend."""
        claims, expires_at = verify_id_token(self, token, now=now)
        check_nonce_for_key(claims.get("nonce"), csr.public_key())
        identity = identity_of(self, claims)
        check_groups(self, claims)
        subject, names = identity.subject, identity.names
        if identity.admin:
            subject, names = _requested_or(csr, subject, names)
        check_allowed_names(subject, names, self.claims.allowed_names)
        authorization = Authorization(
            subject=subject,
            names=names,
            profile=self.profile,
            lifetime=self.claims.lifetime,
            requested=requested_not_after,
            policies=self.policies,
            provisioner=self.name,
        )
        return TokenGrant(
            authorization=authorization,
            provisioner=self.name,
            token_id=id_token_spend_id(claims, token),
            expires_at=expires_at,
        )


def _requested_or(
    csr: x509.CertificateSigningRequest, subject: x509.Name, names: tuple[x509.GeneralName, ...]
) -> tuple[x509.Name, tuple[x509.GeneralName, ...]]:
    """What an admin's CSR asks for (subject and SANs), or their own identity if nothing."""
    try:
        requested = tuple(canonical_general_name(n) for n in sans_of(csr.extensions))
    except (ValueError, x509.DuplicateExtension):
        raise BadRequest("the CSR extensions cannot be parsed") from None
    if not requested:
        return subject, names
    asked = requested_subject(csr.subject)  # one CN and nothing else
    return (asked if len(asked) else subject), requested


# --------------------------------------------------------------------------- flows


def load_oidc_provisioner(
    session: Session, name: str, *, directory: ProviderDirectory | None = None
) -> OIDCProvisioner:
    """The ``oidc`` provisioner called ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    record = ProvisionerRepository(session).get(name)
    if record.type != OIDC_TYPE:
        raise PolicyDenied(
            f"provisioner {name!r} is of type {record.type!r}, not {OIDC_TYPE!r}", name=name
        )
    return OIDCProvisioner.from_config(record.name, record.config, directory=directory)


def find_oidc_provisioner(
    store: Store, name: str, *, directory: ProviderDirectory | None = None
) -> OIDCProvisioner:
    """Like :func:`load_oidc_provisioner`, for callers without a session."""
    validate_provisioner_name(name)
    with store.transaction(read_only=True) as session:
        return load_oidc_provisioner(session, name, directory=directory)


def sign_in_provisioner(
    store: Store, name: str, *, directory: ProviderDirectory | None = None
) -> OIDCProvisioner:
    """The ``oidc`` provisioner a sign-in names; anything else is :class:`Unauthorized`."""
    try:
        return find_oidc_provisioner(store, name, directory=directory)
    except (NotFound, PolicyDenied):
        raise Unauthorized(f"there is no OpenID Connect provisioner named {name[:64]!r}") from None


def authorize_oidc_sign(
    store: Store,
    provisioner: str,
    id_token: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
    requested_not_after: timedelta | datetime | None = None,
    directory: ProviderDirectory | None = None,
) -> Authorization:
    """Verify ``id_token`` for ``csr`` with the ``oidc`` provisioner, spend it once, audit.

    As with one-time tokens, the request is prechecked (CSR, names, profile, lifetime) before
    the ID token is spent, so a request that would fail leaves the sign-in usable.
    """
    loaded = sign_in_provisioner(store, provisioner, directory=directory)
    grant = loaded.authorize(id_token, csr, ca=ca, now=now, requested_not_after=requested_not_after)
    authorization = grant.authorization
    try:
        precheck_request(csr, authorization, ca=ca, now=now)
    except NameNotAuthorized as exc:
        raise NameNotAuthorized(_with_allowed(exc.detail, authorization), **exc.data) from None
    spend_token(
        store,
        f"oidc:{loaded.name}",
        grant.token_id,
        id_token_kept_until(grant.expires_at),
        what="ID token",
        now=now,
        actor=f"oidc:{loaded.name}:{common_name(authorization.subject) or '?'}",
        target=authorization.subject.rfc4514_string(),
        details={
            "purpose": "sign",
            "provisioner": loaded.name,
            "token_id": grant.token_id,
            "san": [format_general_name(n) for n in authorization.names],
            "profile": authorization.profile,
        },
    )
    return authorization


def _with_allowed(detail: str, authorization: Authorization) -> str:
    """A refused name's message, with who signed in and the names this sign-in allows."""
    who = common_name(authorization.subject) or "?"
    allowed = [f"common name {who!r}"] + [format_general_name(n) for n in authorization.names]
    return (
        f"{detail}: you signed in as {who}, and this sign-in allows {', '.join(allowed)} "
        "(leave SUBJECT out to get exactly these)"
    )


def add_oidc_provisioner(
    store: Store,
    provisioner: OIDCProvisioner,
    *,
    now: datetime,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
) -> OIDCProvisioner:
    """Record ``provisioner`` with a "provisioner.added" entry; :class:`Conflict` if taken."""
    from ostiary.provisioners.manage import OFFLINE

    if provisioner.name == OFFLINE:
        raise PolicyDenied(f"{OFFLINE!r} names certificates signed offline: choose another name")
    if ca_claims is not None:
        provisioner.claims.check_within(ca_claims)
    if provisioner.client_secret_file is not None:
        read_client_secret(provisioner)
    config = provisioner.to_config()
    with store.transaction() as session:
        ProvisionerRepository(session).add(provisioner.name, type=OIDC_TYPE, config=config, now=now)
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=provisioner.name,
            details={"type": OIDC_TYPE, **{k: v for k, v in config.items()}},
        )
    return provisioner


__all__ = [
    "DEFAULT_SCOPES",
    "OIDC_PROFILES",
    "OIDC_TYPE",
    "OIDCProvisioner",
    "add_oidc_provisioner",
    "authorize_oidc_sign",
    "find_oidc_provisioner",
    "load_oidc_provisioner",
]
