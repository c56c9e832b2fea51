"""Configured provisioners in the store: add, update, remove, list, load; each change audited.

A provisioner record holds its type and a JSON ``config``; every type keeps its
:class:`~ostiary.provisioners.base.ProvisionerClaims` under ``config["claims"]``, so renewal
can find the claims of any certificate's provisioner without knowing the type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from ostiary.core.errors import BadRequest, NotFound, PolicyDenied, Unauthorized
from ostiary.core.lifetime import Lifetime
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    claims_from_record_config,
    is_provisioner_name,
    validate_provisioner_name,
)
from ostiary.provisioners.jwk import JWK_TYPE, JWKProvisioner
from ostiary.store import AuditLog, ProvisionerRecord, ProvisionerRepository, Store

T = TypeVar("T")

#: The ``provisioner`` recorded for certificates the CA owner signed with ``ca sign``.
OFFLINE = "offline"


@dataclass(frozen=True)
class ProvisionerInfo:
    """What ``provisioner list`` shows: no key material beyond the public key's id."""

    name: str
    type: str
    admin: bool
    profiles: tuple[str, ...]
    claims: ProvisionerClaims
    key_id: str | None
    created_at: datetime


def add_jwk_provisioner(
    store: Store,
    name: str,
    *,
    password: bytes,
    claims: ProvisionerClaims,
    now: datetime,
    admin: bool = False,
    profiles: Sequence[str] = LEAF_PROFILES,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
) -> JWKProvisioner:
    """Make a ``jwk`` provisioner (new key pair) and record it with a "provisioner.added" entry.

    ``claims`` must lie within ``ca_claims`` (the CA-wide ones) when given. A taken name is
    :class:`~ostiary.core.errors.Conflict`; nothing is written then.
    """
    validate_provisioner_name(name)
    if name == OFFLINE:
        raise PolicyDenied(f"{OFFLINE!r} names certificates signed offline: choose another name")
    if ca_claims is not None:
        claims.check_within(ca_claims)
    provisioner = JWKProvisioner.create(
        name, password=password, claims=claims, admin=admin, profiles=profiles
    )
    with store.transaction() as session:
        ProvisionerRepository(session).add(
            name, type=JWK_TYPE, config=provisioner.to_config(), now=now
        )
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=name,
            details={
                "type": JWK_TYPE,
                "admin": admin,
                "profiles": list(provisioner.profiles),
                "kid": provisioner.kid,
                "claims": claims.to_config(),
            },
        )
    return provisioner


def record_provisioner(
    store: Store,
    name: str,
    *,
    type: str,
    config: dict[str, Any],
    audited: Mapping[str, Any],
    now: datetime,
    actor: str | None,
) -> None:
    """Store a new provisioner record with its "provisioner.added" entry (``audited`` are
    the details shown there: no key material, no long PEM); :class:`Conflict` if taken.
    """
    with store.transaction() as session:
        ProvisionerRepository(session).add(name, type=type, config=config, now=now)
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=name,
            details={"type": type, **audited},
        )


def remove_provisioner(store: Store, name: str, *, now: datetime, actor: str | None = None) -> None:
    """Delete a provisioner (its certificates stay recorded) with a "provisioner.removed" entry.

    Its tokens stop working at once; its certificates can no longer be renewed.
    """
    with store.transaction() as session:
        repository = ProvisionerRepository(session)
        record_type = repository.get(name).type
        repository.remove(name)
        AuditLog(session).append(
            "provisioner.removed", at=now, actor=actor, target=name, details={"type": record_type}
        )


def rotate_jwk_key(
    store: Store, name: str, *, password: bytes, now: datetime, actor: str | None = None
) -> JWKProvisioner:
    """Give ``jwk`` provisioner ``name`` a new key pair, audited as "provisioner.key_rotated".

    Tokens signed with the old key stop working (on a running server within
    :data:`~ostiary.provisioners.cache.PROVISIONER_RECHECK_SECONDS`); its settings stay.
    """
    with store.transaction() as session:
        repository = ProvisionerRepository(session)
        record = repository.get(name)
        if record.type != JWK_TYPE:
            raise BadRequest(f"provisioner {name!r} is of type {record.type!r}: it has no key")
        current = JWKProvisioner.from_config(name, record.config)
        current.load_private_key(password)  # the CA password must open the key it replaces
        fresh = replace(
            JWKProvisioner.create(
                name,
                password=password,
                claims=current.claims,
                admin=current.admin,
                profiles=current.profiles,
            ),
            require_attestation=current.require_attestation,
        )
        repository.update(name, config={**record.config, **fresh.to_config()}, now=now)
        AuditLog(session).append(
            "provisioner.key_rotated",
            at=now,
            actor=actor,
            target=name,
            details={"old_kid": current.kid, "new_kid": fresh.kid},
        )
    return fresh


@dataclass(frozen=True)
class ClaimsChange:
    """Changes to a provisioner's claims; None leaves that claim as it is."""

    min_lifetime: timedelta | None = None
    default_lifetime: timedelta | None = None
    max_lifetime: timedelta | None = None
    allow_renewal: bool | None = None
    allow_renewal_after_expiry: bool | None = None
    renew_after_expiry_window: timedelta | None = None
    allowed_names: Sequence[str] | None = None

    def apply(self, claims: ProvisionerClaims) -> ProvisionerClaims:
        current = claims.lifetime
        lifetime = Lifetime(
            self.min_lifetime or current.minimum,
            self.default_lifetime or current.default,
            self.max_lifetime or current.maximum,
        )
        changes: dict[str, Any] = {"lifetime": lifetime}
        for name in ("allow_renewal", "allow_renewal_after_expiry", "renew_after_expiry_window"):
            if getattr(self, name) is not None:
                changes[name] = getattr(self, name)
        if self.allowed_names is not None:
            changes["allowed_names"] = tuple(self.allowed_names)
        return replace(claims, **changes)


#: Config keys never written to the audit log as they are (key material, long PEM).
_NOT_AUDITED = frozenset({"key", "encrypted_key", "roots"})


def load_typed_provisioner(record: ProvisionerRecord) -> Any:
    """The typed provisioner of a record (jwk, approval, oidc, attest, scep or est)."""
    from ostiary.provisioners.approval import APPROVAL_TYPE, ApprovalProvisioner
    from ostiary.provisioners.attest import ATTEST_TYPE, AttestProvisioner
    from ostiary.provisioners.est import EST_TYPE, EstProvisioner
    from ostiary.provisioners.oidc import OIDC_TYPE, OIDCProvisioner
    from ostiary.provisioners.scep import SCEP_TYPE, ScepProvisioner

    loaders: dict[str, Callable[[str, dict[str, Any]], Any]] = {
        JWK_TYPE: JWKProvisioner.from_config,
        APPROVAL_TYPE: ApprovalProvisioner.from_config,
        OIDC_TYPE: OIDCProvisioner.from_config,
        ATTEST_TYPE: AttestProvisioner.from_config,
        SCEP_TYPE: ScepProvisioner.from_config,
        EST_TYPE: EstProvisioner.from_config,
    }
    loader = loaders.get(record.type)
    if loader is None:
        raise BadRequest(f"provisioner {record.name!r} is of type {record.type!r}: not updatable")
    return loader(record.name, record.config)


def update_provisioner(
    store: Store,
    name: str,
    *,
    settings: Mapping[str, Any],
    claims: ClaimsChange,
    ca_claims: ProvisionerClaims | None,
    now: datetime,
    actor: str | None = None,
    check: Callable[[Any, Any], None] | None = None,
) -> Any:
    """Change settings of provisioner ``name`` in place, audited as "provisioner.updated".

    ``settings`` are fields of its type's dataclass (a field another type has is refused);
    the new provisioner is validated as at add: the dataclass's own checks, the claims within
    ``ca_claims``, then ``check(old, new)`` (the type's checks that need I/O). Its name, key
    and certificates stay, so holders renew as before. Nothing is written when any check fails.
    """
    with store.transaction() as session:
        repository = ProvisionerRepository(session)
        record = repository.get(name)
        current = load_typed_provisioner(record)
        known = {f.name for f in fields(current)} - {"name", "claims", "directory"}
        for setting in settings:
            if setting not in known:
                raise BadRequest(
                    f"provisioner {name!r} is of type {record.type!r}, which has no "
                    f"{setting.replace('_', '-')!r} setting"
                )
        new_claims = claims.apply(current.claims)
        if ca_claims is not None:
            new_claims.check_within(ca_claims)
        updated = replace(current, claims=new_claims, **settings)
        if check is not None:
            check(current, updated)
        config = {**record.config, **updated.to_config()}
        changed = {
            key: {"before": record.config.get(key), "after": value}
            for key, value in config.items()
            if record.config.get(key) != value
        }
        if not changed:
            raise BadRequest(f"nothing to change in provisioner {name!r}: give a new setting")
        repository.update(name, config=config, now=now)
        AuditLog(session).append(
            "provisioner.updated",
            at=now,
            actor=actor,
            target=name,
            details={
                "type": record.type,
                "changed": {
                    key: value if key not in _NOT_AUDITED else "(changed)"
                    for key, value in changed.items()
                },
            },
        )
    return updated


def load_provisioner_of_type(
    store: Store, name: str, type_: str, loader: Callable[[str, dict[str, Any]], T]
) -> T:
    """The provisioner ``name``, which must be of type ``type_``, read by ``loader``.

    :class:`NotFound` if there is none, :class:`PolicyDenied` if it is of another type.
    """
    with store.transaction(read_only=True) as session:
        record = ProvisionerRepository(session).get(name)
    if record.type != type_:
        raise PolicyDenied(
            f"provisioner {name!r} is of type {record.type!r}, not {type_!r}", name=name
        )
    return loader(record.name, record.config)


def list_provisioners(store: Store) -> list[ProvisionerInfo]:
    """Every provisioner, by name."""
    with store.transaction(read_only=True) as session:
        records = ProvisionerRepository(session).list()
    return [_info(record) for record in records]


def load_jwk_provisioner(session: Session, name: str) -> JWKProvisioner:
    """The ``jwk`` provisioner called ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    record = ProvisionerRepository(session).get(name)
    if record.type != JWK_TYPE:
        raise PolicyDenied(
            f"provisioner {name!r} is of type {record.type!r}, not {JWK_TYPE!r}", name=name
        )
    return JWKProvisioner.from_config(record.name, record.config)


def load_token_provisioner(store: Store, issuer: object, *, what: str) -> JWKProvisioner:
    """The provisioner a token names as its ``iss``: unknown or unfit is :class:`Unauthorized`."""
    if not is_provisioner_name(issuer):
        raise Unauthorized(f"the {what} names no valid issuer ('iss')")
    name = str(issuer)
    with store.transaction(read_only=True) as session:
        try:
            return load_jwk_provisioner(session, name)
        except NotFound:
            raise Unauthorized(f"the {what} is from an unknown provisioner {name!r}") from None
        except PolicyDenied:
            raise Unauthorized(f"provisioner {name!r} does not issue {what}s") from None


def claims_for_certificate(
    session: Session, provisioner: str | None, *, ca: CAIdentity | None
) -> ProvisionerClaims:
    """The claims that govern a certificate issued by ``provisioner``.

    Offline-signed certificates (``offline`` or no provisioner) follow the CA-wide claims.
    A certificate whose provisioner was removed is governed by nothing any more: refused.
    """
    if provisioner is None or provisioner == OFFLINE:
        return ca.claims if ca is not None else ProvisionerClaims()
    try:
        record = ProvisionerRepository(session).get(provisioner)
    except NotFound:
        raise PolicyDenied(
            f"provisioner {provisioner!r}, which issued this certificate, was removed",
            provisioner=provisioner,
        ) from None
    return claims_from_record_config(record.config)


def _info(record: ProvisionerRecord) -> ProvisionerInfo:
    if record.type == JWK_TYPE:
        provisioner = JWKProvisioner.from_config(record.name, record.config)
        return ProvisionerInfo(
            name=record.name,
            type=record.type,
            admin=provisioner.admin,
            profiles=provisioner.profiles,
            claims=provisioner.claims,
            key_id=provisioner.kid,
            created_at=record.created_at,
        )
    return ProvisionerInfo(
        name=record.name,
        type=record.type,
        admin=False,
        profiles=tuple(record.config.get("profiles", ())),
        claims=claims_from_record_config(record.config),
        key_id=None,
        created_at=record.created_at,
    )
