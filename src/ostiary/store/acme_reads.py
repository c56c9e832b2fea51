"""The ACME reads of every order, in Core: an order with its authorizations, an
authorization with its challenges, a challenge with its authorization, the order's
certificate, and the counts newOrder's limits check.

A client polls its authorization until the challenge is validated and its order until the
certificate is issued (RFC 8555 section 7.5.1, 7.4), so these reads run several times per
certificate, and the others once per order. Through the ORM each took a session, its
transaction, an identity map and instances; here each is one connection from the pool and
a few indexed ``SELECT`` statements, whose rows (with the columns' own conversions: JSON,
times) carry the same attribute names as the mapped classes
(:class:`~ostiary.store.acme.AcmeOrder` and its kin), which is all
:mod:`ostiary.acme.resources` reads of them. The statements are built once, with bound
parameters: building one (and its cache key) per call cost about as much as running it, and
each runs through :class:`~ostiary.store._prepared.Prepared` (typed rows with the columns'
names), not ``Connection.execute``, whose execution context, events and result set-up cost
more than SQLite's own work for these one-row reads.
Each takes an engine (a read transaction of its own) or a connection (in its transaction):
the polls, newOrder's counts and the challenge POST read in the group-commit unit that
spends the request's nonce (:meth:`ostiary.acme.nonces.NonceSpend.write`), with no
connection of their own.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, func, select

from ostiary.store._prepared import Prepared
from ostiary.store.acme import AcmeAuthorization, AcmeChallenge, AcmeOrder
from ostiary.store.acme_eab import AcmeEabKey
from ostiary.store.models import CertificateRecord

_ORDER = AcmeOrder.__table__
_AUTHORIZATION = AcmeAuthorization.__table__
_CHALLENGE = AcmeChallenge.__table__
_EAB_KEY = AcmeEabKey.__table__
_CERTIFICATE = CertificateRecord.__table__


class _Select:
    """A SELECT built once and run through :class:`~ostiary.store._prepared.Prepared`
    (typed: each column's own conversion, as a ``Result`` makes), whose rows carry the
    columns' names as attributes, as SQLAlchemy's rows do.
    """

    __slots__ = ("_prepared", "_row")

    def __init__(self, statement: Any) -> None:
        if not isinstance(statement, Select):
            raise TypeError("a SELECT")
        self._prepared = Prepared(statement, typed=True)
        names = [str(column.key) for column in statement.selected_columns]
        self._row: Any = namedtuple("_Row", names, rename=True)  # type: ignore[misc]

    def all(self, connection: Connection, parameters: dict[str, Any]) -> list[Any]:
        return [self._row._make(row) for row in self._prepared.execute(connection, parameters)]

    def first(self, connection: Connection, parameters: dict[str, Any]) -> Any:
        rows = self.all(connection, parameters)
        return rows[0] if rows else None


_ORDER_BY_ID = _Select(select(_ORDER).where(_ORDER.c.id == bindparam("id")))
_AUTHORIZATION_IDS = _Select(
    select(_AUTHORIZATION.c.id)
    .where(_AUTHORIZATION.c.order_id == bindparam("order_id"))
    .order_by(_AUTHORIZATION.c.id)
)
_AUTHORIZATIONS = _Select(
    select(_AUTHORIZATION)
    .where(_AUTHORIZATION.c.order_id == bindparam("order_id"))
    .order_by(_AUTHORIZATION.c.id)
)
_AUTHORIZATION_BY_ID = _Select(select(_AUTHORIZATION).where(_AUTHORIZATION.c.id == bindparam("id")))
_CHALLENGE_BY_ID = _Select(select(_CHALLENGE).where(_CHALLENGE.c.id == bindparam("id")))
_CHALLENGES = _Select(
    select(_CHALLENGE)
    .where(_CHALLENGE.c.authorization_id == bindparam("authorization_id"))
    .order_by(_CHALLENGE.c.type)
)
_ORDER_SERIAL = _Select(
    select(_ORDER.c.account_id, _ORDER.c.provisioner, _ORDER.c.serial).where(
        _ORDER.c.id == bindparam("id")
    )
)
_CERTIFICATES_OF_SERIAL = _Select(
    select(_CERTIFICATE.c.issuer_key_id, _CERTIFICATE.c.der).where(
        _CERTIFICATE.c.serial == bindparam("serial")
    )
)
_ORDERS_SINCE = _Select(
    select(func.count(), func.min(_ORDER.c.created_at)).where(
        _ORDER.c.account_id == bindparam("account_id"), _ORDER.c.created_at > bindparam("since")
    )
)
_PENDING_AUTHORIZATIONS = _Select(
    select(func.count()).where(
        _AUTHORIZATION.c.account_id == bindparam("account_id"),
        _AUTHORIZATION.c.status == "pending",
        _AUTHORIZATION.c.expires_at > bindparam("now"),
    )
)
_EAB_NAMES = _Select(
    select(_EAB_KEY.c.names).where(_EAB_KEY.c.account_id == bindparam("account_id")).limit(1)
)


@contextmanager
def _connected(source: Engine | Connection) -> Iterator[Connection]:
    """A connection of ``source`` in a transaction (an engine: one for this read, so that
    its statements see one snapshot; a connection: its own, e.g. the group-commit unit
    that spends a poll's nonce).
    """
    if isinstance(source, Connection):
        yield source
        return
    with source.connect() as connection, connection.begin():
        yield connection


def order_with_authorizations(
    source: Engine | Connection, order_id: str
) -> tuple[Any, list[Any]] | None:
    """The order ``order_id`` and its authorizations (their ``id`` only, in id order)."""
    with _connected(source) as connection:
        order = _ORDER_BY_ID.first(connection, {"id": order_id})
        if order is None:
            return None
        authorizations = _AUTHORIZATION_IDS.all(connection, {"order_id": order_id})
    return order, list(authorizations)


def order_with_full_authorizations(
    source: Engine | Connection, order_id: str
) -> tuple[Any, list[Any]] | None:
    """The order ``order_id`` and its authorizations (every column), in id order."""
    with _connected(source) as connection:
        order = _ORDER_BY_ID.first(connection, {"id": order_id})
        if order is None:
            return None
        authorizations = _AUTHORIZATIONS.all(connection, {"order_id": order_id})
    return order, list(authorizations)


def challenge_with_authorization(
    source: Engine | Connection, challenge_id: str
) -> tuple[Any, Any] | None:
    """The challenge ``challenge_id`` and its authorization."""
    with _connected(source) as connection:
        challenge = _CHALLENGE_BY_ID.first(connection, {"id": challenge_id})
        if challenge is None:
            return None
        authz = _AUTHORIZATION_BY_ID.first(connection, {"id": challenge.authorization_id})
    return (challenge, authz) if authz is not None else None


def challenge_row(source: Engine | Connection, challenge_id: str) -> Any:
    """The challenge ``challenge_id`` (None if there is none)."""
    with _connected(source) as connection:
        return _CHALLENGE_BY_ID.first(connection, {"id": challenge_id})


def order_certificate(
    source: Engine | Connection, order_id: str, issuer_key_ids: Sequence[str]
) -> tuple[Any, bytes | None] | None:
    """The order ``order_id`` (its ``account_id``, ``provisioner`` and ``serial``) and the
    DER of its certificate, issued by the first of ``issuer_key_ids`` that has that serial
    (None before finalize); None if there is no such order.
    """
    with _connected(source) as connection:
        order = _ORDER_SERIAL.first(connection, {"id": order_id})
        if order is None or order.serial is None:
            return (order, None) if order is not None else None
        issued: dict[str, Any] = dict(
            _CERTIFICATES_OF_SERIAL.all(connection, {"serial": order.serial})
        )
    for key_id in issuer_key_ids:
        der = issued.get(key_id.strip().lower().replace(":", ""))
        if der is not None:
            return order, bytes(der)
    return order, None


def account_limits(
    source: Engine | Connection, account_id: str, *, since: datetime, now: datetime
) -> tuple[int, datetime | None, int, list[str] | None]:
    """What newOrder checks of an account, in one connection: the orders it placed since
    ``since`` and the oldest one's time, its pending unexpired authorizations, and the name
    patterns of its EAB key (None without a key or patterns).
    """
    with _connected(source) as connection:
        placed, oldest = _ORDERS_SINCE.first(connection, {"account_id": account_id, "since": since})
        (pending,) = _PENDING_AUTHORIZATIONS.first(
            connection, {"account_id": account_id, "now": now}
        )
        found = _EAB_NAMES.first(connection, {"account_id": account_id})
    names = found[0] if found is not None else None
    return int(placed or 0), oldest, int(pending or 0), (list(names) if names else None)


def authorization_with_challenges(
    source: Engine | Connection, authz_id: str
) -> tuple[Any, list[Any]] | None:
    """The authorization ``authz_id`` and its challenges, in type order."""
    with _connected(source) as connection:
        authz = _AUTHORIZATION_BY_ID.first(connection, {"id": authz_id})
        if authz is None:
            return None
        challenges = _CHALLENGES.all(connection, {"authorization_id": authz_id})
    return authz, list(challenges)


__all__ = [
    "account_limits",
    "authorization_with_challenges",
    "challenge_row",
    "challenge_with_authorization",
    "order_certificate",
    "order_with_authorizations",
    "order_with_full_authorizations",
]
