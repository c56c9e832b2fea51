"""External Account Binding keys of ``acme`` provisioners: make, list, remove, bind.

``ostiary ca acme eab add --provisioner NAME [--names PATTERN ...]`` makes a key id and a
256-bit HMAC key, prints both once and keeps the key only sealed with the CA password
(:class:`~ostiary.signers.sealing.Sealer`; verifying a MAC needs the key itself, so a hash
would not do). A key binds one account, once, spent in the database
(:meth:`~ostiary.store.AcmeEabRepository.bind`). Its name patterns narrow what that account
may order, within the provisioner's own. Removing a bound key deactivates its account: the
operator's way to cut one client off. The JWS of the binding is checked by
:mod:`ostiary.acme.eab`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from sqlalchemy.orm import Session

from ostiary.core.errors import Unauthorized
from ostiary.core.jws import b64url
from ostiary.provisioners.acme import load_acme_provisioner
from ostiary.provisioners.patterns import check_allowed_names, normalize_name_pattern
from ostiary.signers.sealing import Sealer
from ostiary.store import AcmeAccount, AcmeEabKey, AcmeEabRepository, AuditLog, Store
from ostiary.store.acme import new_id

#: HMAC key length (HS256 wants at least its hash's size).
EAB_KEY_BYTES = 32


@dataclass(frozen=True)
class NewEabKey:
    """What ``eab add`` prints once: the key id and the HMAC key, base64url."""

    kid: str
    hmac_key: str = field(repr=False)
    names: tuple[str, ...]


@dataclass(frozen=True)
class EabKeyInfo:
    """What ``eab list`` shows: never the key."""

    kid: str
    provisioner: str
    names: tuple[str, ...]
    created_at: datetime
    bound_at: datetime | None
    account_id: str | None


#: The key ids :func:`add_eab_key` makes: ``eab-`` and a base64url id.
_KID = re.compile(r"eab-[A-Za-z0-9_-]{1,64}")


def add_eab_key(
    store: Store,
    sealer: Sealer,
    provisioner: str,
    *,
    names: Sequence[str] = (),
    now: datetime,
    actor: str | None = None,
) -> NewEabKey:
    """Make a key for the ``acme`` provisioner ``provisioner`` (audited, key not logged)."""
    load_acme_provisioner(store, provisioner)
    patterns = tuple(normalize_name_pattern(p) for p in names)
    # Neither the key id nor the key may start with "-": command lines would read it as an
    # option (certbot's "--eab-hmac-key -lQc..." fails: "expected one argument"). The id
    # gets a prefix; a key whose base64url would start so is drawn again (1 in 64).
    kid, key = f"eab-{new_id()}", secrets.token_bytes(EAB_KEY_BYTES)
    while b64url(key).startswith("-"):
        key = secrets.token_bytes(EAB_KEY_BYTES)
    with store.transaction() as session:
        AcmeEabRepository(session).add(
            AcmeEabKey(
                kid=kid,
                provisioner=provisioner,
                sealed_key=sealer.seal(key, associated=kid.encode("ascii")),
                names=list(patterns),
                created_at=now,
                bound_at=None,
                account_id=None,
            )
        )
        AuditLog(session).append(
            "acme.eab.added",
            at=now,
            actor=actor,
            target=provisioner,
            details={"kid": kid, "names": list(patterns)},
        )
    return NewEabKey(kid, b64url(key), patterns)


def list_eab_keys(store: Store, provisioner: str | None = None) -> list[EabKeyInfo]:
    if provisioner is not None:
        load_acme_provisioner(store, provisioner)
    with store.transaction(read_only=True) as session:
        return [
            EabKeyInfo(
                row.kid,
                row.provisioner,
                tuple(row.names),
                row.created_at,
                row.bound_at,
                row.account_id,
            )
            for row in AcmeEabRepository(session).of_provisioner(provisioner)
        ]


def remove_eab_key(
    store: Store, provisioner: str, kid: str, *, now: datetime, actor: str | None = None
) -> str | None:
    """Delete the key; a bound key's account is deactivated. Returns that account's id."""
    with store.transaction() as session:
        repository = AcmeEabRepository(session)
        row = repository.get(kid, provisioner=provisioner)
        account_id = row.account_id
        session.delete(row)
        if account_id is not None:
            account = session.get(AcmeAccount, account_id)
            if account is not None:
                account.status = "deactivated"
        AuditLog(session).append(
            "acme.eab.removed",
            at=now,
            actor=actor,
            target=provisioner,
            details={"kid": kid, "deactivated_account": account_id},
        )
    return account_id


def open_eab_key(store: Store, sealer: Sealer, provisioner: str, kid: str) -> bytes:
    """The HMAC key of an unbound key of ``provisioner``; :class:`Unauthorized` otherwise."""
    if not _KID.fullmatch(kid):  # not one :func:`add_eab_key` makes (a NUL: a 500 on PostgreSQL)
        raise Unauthorized("unknown external account key id")
    with store.transaction(read_only=True) as session:
        row = session.get(AcmeEabKey, kid)
        if row is None or row.provisioner != provisioner:
            raise Unauthorized("unknown external account key id")
        if row.account_id is not None:
            raise Unauthorized("this external account key is bound to an account already")
        sealed = row.sealed_key
    return sealer.open(sealed, associated=kid.encode("ascii"))


def bind_eab_key(session: Session, kid: str, account_id: str, *, now: datetime) -> None:
    """Spend the key on ``account_id`` in the caller's transaction (once, on any replica)."""
    if not AcmeEabRepository(session).bind(kid, account_id, now=now):
        raise Unauthorized("this external account key is bound to an account already")


def check_account_names(patterns: Sequence[str] | None, names: Sequence[x509.GeneralName]) -> None:
    """Names outside ``patterns``, those of the account's EAB key (None or empty: any
    name): :class:`NameNotAuthorized`.
    """
    if patterns:
        check_allowed_names(x509.Name([]), names, list(patterns))


__all__ = [
    "EAB_KEY_BYTES",
    "EabKeyInfo",
    "NewEabKey",
    "add_eab_key",
    "bind_eab_key",
    "check_account_names",
    "list_eab_keys",
    "open_eab_key",
    "remove_eab_key",
]
