"""Which CA server replicas run, and when each last showed a sign of life.

Every ``ostiary ca serve`` writes one row (:class:`ReplicaRecord`) under a random instance
id at start and refreshes its ``last_seen`` every
:data:`HEARTBEAT_INTERVAL`; a clean stop deletes it. A
replica that died keeps its row, so ``ca status`` shows how long it has been silent and
``ca doctor`` can tell the versions of the live ones apart. Rows silent for
:data:`FORGET_AFTER` are deleted by the next heartbeat of any replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.store.models import Base

#: How often a running replica refreshes its row.
HEARTBEAT_INTERVAL = timedelta(seconds=30)
#: A replica not seen for this long is reported silent.
SILENT_AFTER = 3 * HEARTBEAT_INTERVAL
#: A replica whose heartbeat is older than this is forgotten.
FORGET_AFTER = timedelta(days=7)


class ReplicaRecord(Base):
    """One running (or silently dead) ``ca serve``: where, which version, last heartbeat."""

    __tablename__ = "replicas"

    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]


@dataclass(frozen=True)
class Replica:
    """A replica as ``ca status`` and ``ca doctor`` read it."""

    instance_id: str
    host: str
    version: str
    started_at: datetime
    last_seen: datetime


class ReplicaRepository:
    """The heartbeat rows, in the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def beat(self, instance_id: str, *, host: str, version: str, now: datetime) -> None:
        """Refresh this replica's ``last_seen`` (inserting its row the first time), and forget
        replicas silent for :data:`FORGET_AFTER`. One UPDATE on every beat but the first.
        """
        refreshed = self._session.execute(
            update(ReplicaRecord)
            .where(ReplicaRecord.instance_id == instance_id)
            .values(last_seen=now)
        )
        if getattr(refreshed, "rowcount", 0) == 0:
            self._session.add(
                ReplicaRecord(
                    instance_id=instance_id,
                    host=host[:255],
                    version=version[:64],
                    started_at=now,
                    last_seen=now,
                )
            )
            self._session.execute(
                delete(ReplicaRecord).where(ReplicaRecord.last_seen < now - FORGET_AFTER)
            )

    def remove(self, instance_id: str) -> None:
        """Forget this replica (a clean stop)."""
        self._session.execute(delete(ReplicaRecord).where(ReplicaRecord.instance_id == instance_id))

    def remove_all(self) -> None:
        """Forget every replica (a restored CA has none running yet)."""
        self._session.execute(delete(ReplicaRecord))

    def all(self) -> list[Replica]:
        """Every recorded replica, the most recently seen first."""
        rows = self._session.scalars(select(ReplicaRecord).order_by(ReplicaRecord.last_seen.desc()))
        return [Replica(r.instance_id, r.host, r.version, r.started_at, r.last_seen) for r in rows]


__all__ = [
    "FORGET_AFTER",
    "HEARTBEAT_INTERVAL",
    "SILENT_AFTER",
    "Replica",
    "ReplicaRecord",
    "ReplicaRepository",
]
