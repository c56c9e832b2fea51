"""SSH certificates from a ``jwk`` provisioner: its SSH policy, SSH tokens, the authorization.

The policy lives in the provisioner record's ``ssh`` entry (``ostiary ca ssh policy``):

    user_lifetime   longest (and default) user certificate, 16 h by default
    host_lifetime   longest (and default) host certificate, 30 d by default
    host            whether its tokens may name host certificates (default: no)
    principals      glob patterns every principal must match (default ``*``)
    extensions      user certificate extensions (default: OpenSSH's five permit-*)
    critical_options  user certificate critical options: source-address, force-command
    principals_from   how a signed-in identity becomes principals (OIDC sign-in, the X.509
                      exchange; :mod:`ostiary.provisioners.ssh_identity`); none by default

Any provisioner may carry an SSH policy; only ``jwk`` ones mint SSH tokens.

An SSH token is a jwk token (:mod:`ostiary.provisioners.jwk`) with ``aud``
``urn:ostiary:ca:<fp>:ssh`` (so it never passes as an X.509 sign token, nor the reverse),
``sub`` the key id, and ``ssh: {"type": "user"|"host", "principals": [...]}``. The principals
come from the token, never from the request; the request names the public key, and may ask
for its type (which must be the token's) and a shorter lifetime.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ostiary.authority.ssh import SSHAuthorization
from ostiary.core.errors import (
    BadRequest,
    LifetimeNotAllowed,
    MalformedInput,
    NameNotAuthorized,
    NotFound,
    PolicyDenied,
    Unauthorized,
)
from ostiary.core.lifetime import format_duration, parse_duration
from ostiary.provisioners import _jose
from ostiary.provisioners.base import CAIdentity
from ostiary.provisioners.jwk import (
    JWK_TYPE,
    MAX_TOKEN_TTL,
    TOKEN_HEADERS,
    TOKEN_TTL,
    JWKProvisioner,
)
from ostiary.provisioners.manage import load_jwk_provisioner
from ostiary.ssh import MAX_PRINCIPALS, SSHCertificateType
from ostiary.store import AuditLog, ProvisionerRepository, Store, TokenSpend

USER_EXTENSIONS = (
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
)
CRITICAL_OPTIONS = ("force-command", "source-address")
#: Where principals may come from when an identity signs in (``claim:NAME`` too).
PRINCIPAL_SOURCES = ("email-local", "email", "upn-local", "upn", "cn", "groups")
_WHAT = "SSH token"
_MAX_PRINCIPAL = 256


def check_principal_source(source: str) -> str:
    """One ``principals_from`` entry (see :mod:`ostiary.provisioners.ssh_identity`)."""
    kind, colon, name = source.partition(":")
    if source in PRINCIPAL_SOURCES or (
        kind == "claim" and colon and name and len(name) <= 64 and name.isprintable()
    ):
        return source
    raise BadRequest(
        f"unknown principal source {source[:64]!r}: use {', '.join(PRINCIPAL_SOURCES)} "
        "or claim:NAME (e.g. claim:preferred_username)"
    )


def check_principal(value: str) -> str:
    """A principal as OpenSSH can carry it: no comma, space or control character.

    Dots, ``@``, ``+``, ``-``, ``_`` and non-ASCII letters survive unchanged (step-ca#253).
    """
    if (
        not value
        or len(value) > _MAX_PRINCIPAL
        or "," in value
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise BadRequest(
            f"{value[:64]!r} is not a valid SSH principal (no comma, space or control "
            f"character; 1 to {_MAX_PRINCIPAL} characters)"
        )
    return value


@dataclass(frozen=True)
class SSHPolicy:
    """A provisioner's rules for SSH certificates."""

    user_lifetime: timedelta = timedelta(hours=16)
    host_lifetime: timedelta = timedelta(days=30)
    host: bool = False
    principals: tuple[str, ...] = ("*",)
    extensions: tuple[str, ...] = USER_EXTENSIONS
    critical_options: Mapping[str, str] = field(default_factory=dict)
    principals_from: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for source in self.principals_from:
            check_principal_source(source)
        for name in self.extensions:
            if name not in USER_EXTENSIONS:
                raise BadRequest(
                    f"unknown SSH extension {name!r}: use {', '.join(USER_EXTENSIONS)}"
                )
        for name in self.critical_options:
            if name not in CRITICAL_OPTIONS:
                raise BadRequest(
                    f"unknown SSH critical option {name!r}: use {', '.join(CRITICAL_OPTIONS)}"
                )
        for lifetime in (self.user_lifetime, self.host_lifetime):
            if lifetime < timedelta(minutes=1):
                raise BadRequest("an SSH certificate lifetime is at least 1m")

    def lifetime_for(self, cert_type: SSHCertificateType) -> timedelta:
        if cert_type is SSHCertificateType.HOST:
            return self.host_lifetime
        return self.user_lifetime

    def check_principals(self, principals: Sequence[str]) -> tuple[str, ...]:
        if not principals:
            raise BadRequest("an SSH certificate needs at least one principal")
        if len(principals) > MAX_PRINCIPALS:
            raise BadRequest(f"an SSH certificate carries at most {MAX_PRINCIPALS} principals")
        for principal in principals:
            check_principal(principal)
            if not any(fnmatch.fnmatchcase(principal, p) for p in self.principals):
                raise NameNotAuthorized(
                    f"principal {principal!r} is outside the provisioner's allowed "
                    f"principals ({', '.join(self.principals)})",
                    principal=principal,
                )
        return tuple(dict.fromkeys(principals))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> SSHPolicy:
        if not config:
            return cls()
        try:
            return cls(
                user_lifetime=parse_duration(str(config["user_lifetime"])),
                host_lifetime=parse_duration(str(config["host_lifetime"])),
                host=bool(config["host"]),
                principals=tuple(str(p) for p in config["principals"]),
                extensions=tuple(str(e) for e in config["extensions"]),
                critical_options={str(k): str(v) for k, v in config["critical_options"].items()},
                principals_from=tuple(str(p) for p in config.get("principals_from", ())),
            )
        except (KeyError, TypeError, AttributeError, BadRequest):
            raise MalformedInput("the provisioner's stored SSH policy is damaged") from None

    def to_config(self) -> dict[str, Any]:
        return {
            "user_lifetime": format_duration(self.user_lifetime),
            "host_lifetime": format_duration(self.host_lifetime),
            "host": self.host,
            "principals": list(self.principals),
            "extensions": list(self.extensions),
            "critical_options": dict(self.critical_options),
            "principals_from": list(self.principals_from),
        }

    def check_lifetime(
        self, cert_type: SSHCertificateType, lifetime: timedelta | None, provisioner: str
    ) -> timedelta:
        """The lifetime to give: ``lifetime`` if within the policy, else the policy's."""
        longest = self.lifetime_for(cert_type)
        if lifetime is not None and lifetime > longest:
            raise LifetimeNotAllowed(
                f"a lifetime of {format_duration(lifetime)} is longer than provisioner "
                f"{provisioner!r} allows for {cert_type.name.lower()} certificates "
                f"({format_duration(longest)})"
            )
        if lifetime is not None and lifetime < timedelta(minutes=1):
            raise LifetimeNotAllowed("an SSH certificate lives at least 1m")
        return lifetime or longest

    def authorization(
        self,
        cert_type: SSHCertificateType,
        principals: tuple[str, ...],
        *,
        key_id: str,
        provisioner: str,
        lifetime: timedelta | None = None,
    ) -> SSHAuthorization:
        """What this policy lets a certificate of ``cert_type`` for ``principals`` say."""
        user = cert_type is SSHCertificateType.USER
        return SSHAuthorization(
            cert_type=cert_type,
            principals=principals,
            key_id=key_id[:256],
            lifetime=self.check_lifetime(cert_type, lifetime, provisioner),
            provisioner=provisioner,
            critical_options=dict(self.critical_options) if user else {},
            extensions=self.extensions if user else (),
        )


def load_ssh_policy(store: Store, name: str) -> tuple[str, SSHPolicy]:
    """Provisioner ``name``'s type and SSH policy (the defaults if it has none)."""
    with store.transaction(read_only=True) as session:
        record = ProvisionerRepository(session).get(name)
        return record.type, SSHPolicy.from_config(record.config.get("ssh"))


def load_ssh_provisioner(store: Store, name: str) -> tuple[JWKProvisioner, SSHPolicy]:
    with store.transaction(read_only=True) as session:
        provisioner = load_jwk_provisioner(session, name)
        record = ProvisionerRepository(session).get(name)
        policy = SSHPolicy.from_config(record.config.get("ssh"))
    return provisioner, policy


def set_ssh_policy(
    store: Store, name: str, policy: SSHPolicy, *, now: datetime, actor: str | None
) -> None:
    """Store ``policy`` as provisioner ``name``'s SSH policy, audited.

    Host certificates come from ``jwk`` tokens only; identity mapping (``principals_from``)
    needs a provisioner whose credential names a person (any but ``jwk``).
    """
    with store.transaction() as session:
        repository = ProvisionerRepository(session)
        record = repository.get(name)
        if policy.host and record.type != JWK_TYPE:
            raise PolicyDenied(
                f"provisioner {name!r} is of type {record.type!r}: host certificates come "
                "from jwk tokens (hosts renew over their certificate, with no provisioner)"
            )
        repository.update(name, config={**record.config, "ssh": policy.to_config()}, now=now)
        AuditLog(session).append(
            "provisioner.updated",
            at=now,
            actor=actor,
            target=name,
            details={"ssh": policy.to_config()},
        )


def mint_ssh_token(
    store: Store,
    provisioner: str,
    principals: Sequence[str],
    *,
    host: bool,
    ca: CAIdentity,
    password: bytes,
    now: datetime,
    key_id: str | None = None,
    ttl: timedelta = TOKEN_TTL,
    actor: str | None = None,
) -> str:
    """A one-time SSH token for exactly ``principals``; audited ("token.minted")."""
    loaded, policy = load_ssh_provisioner(store, provisioner)
    cert_type = SSHCertificateType.HOST if host else SSHCertificateType.USER
    _check_type(policy, cert_type, provisioner)
    names = policy.check_principals(principals)
    if not timedelta(seconds=1) <= ttl <= MAX_TOKEN_TTL:
        raise BadRequest(f"a token's lifetime is 1s to {format_duration(MAX_TOKEN_TTL)}")
    token_id = _jose.new_token_id()
    issued = int(now.timestamp())
    claims = {
        "iss": provisioner,
        "aud": ca.audience("ssh"),
        "sub": key_id or names[0],
        "ssh": {"type": cert_type.name.lower(), "principals": list(names)},
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl.total_seconds()),
        "jti": token_id,
    }
    header = {"alg": "ES256", "kid": loaded.kid}
    private = _jose.import_private_key(loaded.load_private_key(password))
    token = _jose.sign_jwt(header, claims, private)
    with store.transaction() as session:
        AuditLog(session).append(
            "token.minted",
            at=now,
            actor=actor,
            target=str(claims["sub"]),
            details={
                "purpose": "ssh",
                "provisioner": provisioner,
                "token_id": token_id,
                "type": cert_type.name.lower(),
                "principals": list(names),
                "ttl_seconds": int(ttl.total_seconds()),
            },
        )
    return token


@dataclass(frozen=True)
class SSHGrant:
    authorization: SSHAuthorization
    #: The one-time credential to spend with the certificate (None: nothing to spend).
    token: TokenSpend | None


def authorize_ssh(
    store: Store,
    token: str,
    *,
    ca: CAIdentity,
    now: datetime,
    cert_type: SSHCertificateType | None = None,
    lifetime: timedelta | None = None,
) -> SSHGrant:
    """Verify an SSH token (not spent here: with the certificate); what it authorizes."""
    unverified = _jose.peek(token, what=_WHAT, allowed_headers=TOKEN_HEADERS)
    issuer = unverified.claims.get("iss")
    if not isinstance(issuer, str):
        raise Unauthorized("the SSH token names no issuer ('iss')")
    try:
        provisioner, policy = load_ssh_provisioner(store, issuer)
    except (PolicyDenied, NotFound) as exc:
        raise Unauthorized(f"the SSH token is from no usable provisioner: {exc}") from None
    claims = provisioner.verified_claims(unverified, what=_WHAT)
    times = _jose.check_claims(
        claims,
        what=_WHAT,
        now=now,
        audience=ca.audience("ssh"),
        issuer=provisioner.name,
        max_lifetime=MAX_TOKEN_TTL,
    )
    ssh = claims.get("ssh")
    key_id = claims.get("sub")
    if not isinstance(ssh, dict) or not isinstance(key_id, str) or not key_id:
        raise Unauthorized("the token is not an SSH token (no 'ssh' claim)")
    granted_type = {"user": SSHCertificateType.USER, "host": SSHCertificateType.HOST}.get(
        ssh.get("type")  # type: ignore[arg-type]
    )
    principals = ssh.get("principals")
    if granted_type is None or not isinstance(principals, list):
        raise Unauthorized("the SSH token's 'ssh' claim is malformed")
    if cert_type is not None and cert_type is not granted_type:
        raise PolicyDenied(
            f"this token grants a {granted_type.name.lower()} certificate, "
            f"not a {cert_type.name.lower()} certificate"
        )
    _check_type(policy, granted_type, provisioner.name)
    names = policy.check_principals([str(p) for p in principals])
    authorization = policy.authorization(
        granted_type, names, key_id=key_id, provisioner=provisioner.name, lifetime=lifetime
    )
    spend = TokenSpend(provisioner.name, str(claims["jti"]), times.expires_at)
    return SSHGrant(authorization, spend)


def _check_type(policy: SSHPolicy, cert_type: SSHCertificateType, name: str) -> None:
    if cert_type is SSHCertificateType.HOST and not policy.host:
        raise PolicyDenied(
            f"provisioner {name!r} issues SSH user certificates only "
            "(allow hosts with 'ostiary ca ssh policy NAME --host')"
        )
