"""The ACME reads clients poll, in Core: an order with its authorizations' ids, an
authorization with its challenges.

A client polls its authorization until the challenge is validated and its order until the
certificate is issued (RFC 8555 section 7.5.1, 7.4), so these reads run several times per
certificate. Through the ORM each took a session, its transaction, an identity map and
instances; here each is one connection from the pool and two indexed ``SELECT`` statements,
whose rows (with the columns' own conversions: JSON, times) carry the same attribute names
as the mapped classes (:class:`~ostiary.store.acme.AcmeOrder` and its kin), which is all
:mod:`ostiary.acme.resources` reads of them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from ostiary.store.acme import AcmeAuthorization, AcmeChallenge, AcmeOrder

_ORDER = AcmeOrder.__table__
_AUTHORIZATION = AcmeAuthorization.__table__
_CHALLENGE = AcmeChallenge.__table__


def order_with_authorizations(engine: Engine, order_id: str) -> tuple[Any, list[Any]] | None:
    """The order ``order_id`` and its authorizations (their ``id`` only, in id order)."""
    with engine.connect() as connection:
        order = connection.execute(select(_ORDER).where(_ORDER.c.id == order_id)).first()
        if order is None:
            return None
        authorizations = connection.execute(
            select(_AUTHORIZATION.c.id)
            .where(_AUTHORIZATION.c.order_id == order_id)
            .order_by(_AUTHORIZATION.c.id)
        ).all()
    return order, list(authorizations)


def authorization_with_challenges(engine: Engine, authz_id: str) -> tuple[Any, list[Any]] | None:
    """The authorization ``authz_id`` and its challenges, in type order."""
    with engine.connect() as connection:
        authz = connection.execute(
            select(_AUTHORIZATION).where(_AUTHORIZATION.c.id == authz_id)
        ).first()
        if authz is None:
            return None
        challenges = connection.execute(
            select(_CHALLENGE)
            .where(_CHALLENGE.c.authorization_id == authz_id)
            .order_by(_CHALLENGE.c.type)
        ).all()
    return authz, list(challenges)


__all__ = ["authorization_with_challenges", "order_with_authorizations"]
