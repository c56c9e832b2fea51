"""One-time token ids: each may be spent once, across every replica sharing the database.

The unique key on ``(provisioner, token_id)`` is the guard: two replicas racing with the same
token both try to insert, the database lets exactly one through. Rows are kept until the
token's own expiry, after which the token is refused on its ``exp`` anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete
from sqlalchemy.orm import Session

from ostiary.core.errors import BadRequest, TokenReused
from ostiary.store._unique import insert_ignoring_duplicate, insert_unless_duplicate
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


def spend_token(connection: Connection, spend: TokenSpend, now: datetime) -> bool:
    """Spend a token on the Core write path; False if it was spent before (nothing written).

    The same rule as :meth:`TokenRepository.use`, for :mod:`ostiary.store.group_commit`
    units: a refusal is a result, not an error, so the batch's other writes go on.
    """
    _check_token_id(spend.token_id)
    values = {
        "provisioner": spend.provisioner,
        "token_id": spend.token_id,
        "used_at": now,
        "expires_at": spend.expires_at,
    }
    return insert_ignoring_duplicate(connection, UsedToken, values)


def _check_token_id(token_id: str) -> None:
    if not token_id or len(token_id) > TOKEN_ID_LENGTH:
        raise BadRequest(f"a token id must be 1 to {TOKEN_ID_LENGTH} characters long")
