"""One-time secrets bound to names: SCEP challenges and EST enrollment codes.

An officer (or an MDM, through a dynamic SCEP provisioner) asks for a secret that grants
one certificate with a given subject and SANs, within a provisioner's allowed names and
profile. The secret is shown once; only its SHA-256 is stored (table ``scep_challenges``,
which holds the EST codes too: the same thing under another protocol's name), found by
that digest and compared in constant time, and spent by one conditional ``UPDATE`` whose
row count says whether this request, on any replica, was the one that spent it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ostiary.core.errors import BadRequest, Unauthorized
from ostiary.core.issuance import Authorization
from ostiary.core.names import format_general_name, parse_san, parse_subject
from ostiary.core.profiles import get_profile
from ostiary.provisioners.base import ProvisionerClaims
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.store import AuditLog, ScepRepository, Store

MIN_GRANT_TTL = timedelta(minutes=1)
MAX_GRANT_TTL = timedelta(days=30)


@dataclass(frozen=True)
class Grant:
    """A secret as made: the value (shown once) and what it grants."""

    value: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    expires_at: datetime


@dataclass(frozen=True)
class FoundGrant:
    """A valid, unspent secret's names and the digest that spends it."""

    subject: str
    sans: list[str]
    digest: str


class GrantRow(Protocol):
    """A secret's row (:class:`~ostiary.store.ScepChallenge`, or a Core row of it)."""

    @property
    def subject(self) -> str: ...
    @property
    def sans(self) -> list[str]: ...
    @property
    def challenge_sha256(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def used_at(self) -> datetime | None: ...


class Granting(Protocol):
    """A provisioner that grants names through one-time secrets (``scep``, ``est``)."""

    @property
    def name(self) -> str: ...
    @property
    def claims(self) -> ProvisionerClaims: ...
    @property
    def profile(self) -> str: ...


def grant_authorization(provisioner: Granting, subject: str, sans: list[str]) -> Authorization:
    """The authorization for these names, within the provisioner's claims and profile.

    The names are parsed (canonical form) before the allowed-name patterns see them.
    """
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


def record_grant(
    store: Store,
    authorization: Authorization,
    *,
    ttl: timedelta,
    now: datetime,
    actor: str | None,
    event: str,
) -> Grant:
    """A new secret for ``authorization``'s names, stored by its digest and audited."""
    if not MIN_GRANT_TTL <= ttl <= MAX_GRANT_TTL:
        raise BadRequest("a challenge or code lives between 1m and 30d")
    provisioner = authorization.provisioner or ""
    subject = authorization.subject.rfc4514_string()
    names = [format_general_name(n) for n in authorization.names]
    value = secrets.token_hex(20)  # 160 bits; hex, so no shell or getopt ever misreads it
    with store.transaction() as session:
        ScepRepository(session).add_challenge(
            value,
            provisioner=provisioner,
            subject=subject,
            sans=names,
            now=now,
            expires_at=now + ttl,
        )
        AuditLog(session).append(
            event,
            at=now,
            actor=actor,
            target=provisioner,
            details={"subject": subject, "san": names},
        )
    return Grant(value, provisioner, subject, tuple(names), now + ttl)


def find_grant(store: Store, provisioner: str, secret: str, *, now: datetime) -> FoundGrant:
    """The names ``secret`` grants for ``provisioner``; :class:`Unauthorized` when it is
    wrong, used or expired. Nothing is spent here.
    """
    with store.transaction(read_only=True) as session:
        return grant_of_row(ScepRepository(session).find_challenge(provisioner, secret), now=now)


def grant_of_row(row: GrantRow | None, *, now: datetime) -> FoundGrant:
    """:func:`find_grant` on the secret's row read already (None: no such secret)."""
    if row is None:
        raise Unauthorized("the challenge password is wrong")
    if row.used_at is not None:
        raise Unauthorized("the challenge password was used already: challenges are one-time")
    if row.expires_at <= now:
        raise Unauthorized("the challenge password expired: ask for a new one")
    return FoundGrant(row.subject, list(row.sans), row.challenge_sha256)


__all__ = [
    "MAX_GRANT_TTL",
    "FoundGrant",
    "Grant",
    "GrantRow",
    "Granting",
    "find_grant",
    "grant_authorization",
    "grant_of_row",
    "record_grant",
]
