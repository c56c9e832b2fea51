"""Spending a one-time credential once, across replicas, with its audit entry.

Single use is enforced by the database: spending an id inserts a row under a unique key
(:class:`~ostiary.store.TokenRepository`), so of two replicas racing with the same credential
exactly one succeeds, and a replay gets :class:`~ostiary.core.errors.TokenReused`. The spend
and its audit entry ("token.used", or "token.reused" for a refused replay) commit together.

The jwk sign and holder tokens (:mod:`.tokens`), OIDC ID tokens (:mod:`.oidc`) and the
console's OpenID sign-ins spend here when nothing else is written with them; a spend that
commits with a certificate goes through the issuing transaction instead
(:class:`~ostiary.store.TokenSpend`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ostiary.core.errors import TokenReused
from ostiary.store import AuditLog, Store, TokenRepository


def spend_token(
    store: Store,
    namespace: str,
    token_id: str,
    expires_at: datetime,
    *,
    what: str,
    now: datetime,
    actor: str,
    target: str,
    details: dict[str, Any],
) -> None:
    """Record ``token_id`` as used (once, across replicas) with its audit entry.

    ``namespace`` keeps ids of different issuers apart (a provisioner's name,
    ``oidc:<provisioner>``, ``x5c:<fingerprint>``); ``what`` names the credential in the
    refusal. A replay is audited too ("token.reused") before :class:`TokenReused` is raised:
    the refused insert ran in a savepoint, so the transaction can still commit that entry.
    """
    reused = False
    with store.transaction() as session:
        try:
            TokenRepository(session).use(token_id, namespace, expires_at, now)
        except TokenReused:
            reused = True
        AuditLog(session).append(
            "token.reused" if reused else "token.used",
            at=now,
            actor=actor,
            target=target,
            details=details,
        )
    if reused:
        raise TokenReused(f"this {what} was already used: tokens are single-use", token_id=token_id)


__all__ = ["spend_token"]
