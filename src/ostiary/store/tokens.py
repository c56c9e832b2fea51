"""One-time token ids: each may be spent once, across every replica sharing the database.

The unique key on ``(provisioner, token_id)`` is the guard: two replicas racing with the same
token both try to insert, the database lets exactly one through. Rows are kept until the
token's own expiry, after which the token is refused on its ``exp`` anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ostiary.core.errors import BadRequest, TokenReused
from ostiary.store._prepared import Prepared
from ostiary.store._unique import insert_unless_duplicate
from ostiary.store.models import TOKEN_ID_LENGTH, UsedToken


class TokenRepository:
    """Spent one-time token ids, per provisioner."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def use(self, token_id: str, provisioner: str, expires_at: datetime, now: datetime) -> None:
        """Spend ``token_id``; :class:`TokenReused` if it was spent before.

        The insert runs in a SAVEPOINT: a refusal leaves the caller's transaction usable
        (to record a "denied" audit entry, for instance). The token id is not a secret, but
        the message does not repeat it all the same.
        """
        _check_token_id(token_id)
        row = UsedToken(
            provisioner=provisioner, token_id=token_id, used_at=now, expires_at=expires_at
        )
        if not insert_unless_duplicate(self._session, row):
            raise TokenReused(
                f"this token was already used with provisioner {provisioner!r}",
                provisioner=provisioner,
            )

    def purge_expired(self, now: datetime) -> int:
        """Forget token ids whose token expired before ``now``; how many were removed.

        Pass ``now`` minus the clock-skew leeway the token verifier allows, or a token still
        accepted by a lenient verifier could be replayed.
        """
        result = self._session.execute(
            delete(UsedToken)
            .where(UsedToken.expires_at < now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))


@dataclass(frozen=True, slots=True)
class TokenSpend:
    """A one-time token to spend in the same transaction as what it pays for.

    ``provisioner`` is the namespace of the id (the provisioner's name for sign tokens).
    """

    provisioner: str
    token_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenUse:
    """A token spent at ``at``: what a write unit names for its batch to spend (see
    :meth:`GroupCommit.submit <ostiary.store.group_commit.GroupCommit.submit>`).
    """

    spend: TokenSpend
    at: datetime


def spend_tokens(connection: Connection, uses: Sequence[TokenUse]) -> list[bool]:
    """Spend many tokens in one statement; for each use, whether it spent its token.

    The same rule as :meth:`TokenRepository.use`, for :mod:`ostiary.store.group_commit`
    batches: False (nothing written) for a token spent before, by any replica, or by an
    earlier use in ``uses``. A refusal is a result, not an error, so the batch's other
    writes go on. ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` names the rows the
    database let through; on PostgreSQL a concurrent, uncommitted insert of the same token
    makes it wait for that transaction, then report the token spent if it committed.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for use in uses:
        _check_token_id(use.spend.token_id)
        rows.setdefault(
            (use.spend.provisioner, use.spend.token_id),
            {
                "provisioner": use.spend.provisioner,
                "token_id": use.spend.token_id,
                "used_at": use.at,
                "expires_at": use.spend.expires_at,
            },
        )
    if not rows:
        return []
    statement = _spend_statement(connection.dialect.name == "postgresql")
    inserted = {(row[0], row[1]) for row in statement.execute(connection, list(rows.values()))}
    answers = []
    for use in uses:
        key = (use.spend.provisioner, use.spend.token_id)
        answers.append(key in inserted)
        inserted.discard(key)  # a second use of the same token in ``uses`` is a replay
    return answers


@functools.cache
def _spend_statement(postgres: bool) -> Prepared:
    """Built once: building a statement per batch costs more than running it."""
    statement = (
        postgresql.insert(UsedToken).on_conflict_do_nothing()
        if postgres
        else sqlite.insert(UsedToken).on_conflict_do_nothing()
    )
    return Prepared(statement.returning(UsedToken.provisioner, UsedToken.token_id))


def _check_token_id(token_id: str) -> None:
    if not token_id or len(token_id) > TOKEN_ID_LENGTH:
        raise BadRequest(f"a token id must be 1 to {TOKEN_ID_LENGTH} characters long")
