"""What the web console must share between server processes and replicas.

- **Console entries**: OpenID Connect sign-ins in flight (``flow``) and signed-in sessions
  (``session``), keyed by the SHA-256 of their random id (the id itself, a bearer secret, is
  only in the browser's cookie). A flow is taken out once: the delete decides, so two
  processes racing with the same callback cannot both use it.
- **Server secrets**: random keys the processes must agree on (the console's CSRF key). The
  first process to need one inserts it; the unique key makes every other process read that
  same value.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.store._unique import insert_unless_duplicate
from ostiary.store.models import Base

#: Hex of a SHA-256.
DIGEST_LENGTH = 64
KIND_LENGTH = 16


class ConsoleEntry(Base):
    """A console sign-in flow or session, by the SHA-256 of its id."""

    __tablename__ = "console_entries"

    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), primary_key=True)
    #: ``"flow"`` or ``"session"``: an id of one kind never opens the other.
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))
    data: Mapped[dict[str, Any]]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ServerSecret(Base):
    """A random key shared by every server process using this database."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class ConsoleRepository:
    """Console flows and sessions, and the shared server secrets."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def put(self, kind: str, digest: str, data: dict[str, Any], expires_at: datetime) -> None:
        self._session.add(ConsoleEntry(digest=digest, kind=kind, data=data, expires_at=expires_at))

    def get(
        self, kind: str, digest: str, *, now: datetime
    ) -> tuple[dict[str, Any], datetime] | None:
        """The entry's data and expiry, if it exists, is of ``kind`` and has not expired."""
        row = self._session.execute(
            select(ConsoleEntry.data, ConsoleEntry.expires_at).where(
                ConsoleEntry.digest == digest,
                ConsoleEntry.kind == kind,
                ConsoleEntry.expires_at > now,
            )
        ).one_or_none()
        return (dict(row.data), row.expires_at) if row is not None else None

    def take(
        self, kind: str, digest: str, *, now: datetime
    ) -> tuple[dict[str, Any], datetime] | None:
        """Remove the entry and return it, once; None if gone, expired or of another kind."""
        found = self.get(kind, digest, now=now)
        if found is None:
            return None
        return found if self.remove(kind, digest) else None

    def remove(self, kind: str, digest: str) -> bool:
        """Delete the entry; whether this call was the one that deleted it."""
        result = self._session.execute(
            delete(ConsoleEntry)
            .where(ConsoleEntry.digest == digest, ConsoleEntry.kind == kind)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0)) == 1

    def purge_expired(self, now: datetime) -> int:
        result = self._session.execute(
            delete(ConsoleEntry)
            .where(ConsoleEntry.expires_at <= now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))

    def live(self, kind: str, *, now: datetime) -> tuple[int, datetime | None]:
        """How many entries of ``kind`` have not expired at ``now``, and the soonest expiry."""
        count, soonest = self._session.execute(
            select(func.count(), func.min(ConsoleEntry.expires_at)).where(
                ConsoleEntry.kind == kind, ConsoleEntry.expires_at > now
            )
        ).one()
        return int(count or 0), soonest

    def secret(self, name: str, *, size: int, now: datetime) -> bytes:
        """The shared secret ``name``, made (``size`` random bytes) by the first caller."""
        candidate = ServerSecret(name=name, value=secrets.token_bytes(size), created_at=now)
        insert_unless_duplicate(self._session, candidate)
        value = self._session.execute(
            select(ServerSecret.value).where(ServerSecret.name == name)
        ).scalar_one()
        return bytes(value)


__all__ = ["ConsoleEntry", "ConsoleRepository", "ServerSecret"]
