"""Configured provisioners, by name: what the CA accepts as proof for which certificates.

``config`` is the provisioner type's own settings as JSON. Keep secrets out of it (refer to
them, e.g. by file or environment variable name): rows end up in backups and exports.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from ostiary.core.errors import Conflict, NotFound
from ostiary.store._prepared import Prepared
from ostiary.store._unique import insert_unless_duplicate
from ostiary.store.models import ProvisionerRecord


class ProvisionerRepository:
    """The provisioners table, by name."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(
        self, name: str, *, type: str, config: dict[str, Any], now: datetime | None = None
    ) -> ProvisionerRecord:
        """Add a provisioner; :class:`Conflict` if the name is taken."""
        at = now or datetime.now(UTC)
        record = ProvisionerRecord(
            name=name, type=type, config=dict(config), created_at=at, updated_at=at
        )
        if not insert_unless_duplicate(self._session, record):
            raise Conflict(f"a provisioner named {name!r} already exists", name=name)
        return record

    def get(self, name: str) -> ProvisionerRecord:
        """Find the provisioner called ``name``; :class:`NotFound` if there is none."""
        if "\x00" in name:  # no name holds one; PostgreSQL would refuse the query (a 500)
            raise NotFound(f"no provisioner named {name!r}", name=name)
        record = self._session.scalars(
            select(ProvisionerRecord).where(ProvisionerRecord.name == name)
        ).one_or_none()
        if record is None:
            raise NotFound(f"no provisioner named {name!r}", name=name)
        return record

    def list(self) -> builtins.list[ProvisionerRecord]:
        """Every provisioner, by name."""
        return builtins.list(
            self._session.scalars(select(ProvisionerRecord).order_by(ProvisionerRecord.name))
        )

    def update(
        self,
        name: str,
        *,
        type: str | None = None,
        config: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> ProvisionerRecord:
        """Replace the type and/or the whole config of ``name``; :class:`NotFound` if absent."""
        record = self.get(name)
        if type is not None:
            record.type = type
        if config is not None:
            record.config = dict(config)
        record.updated_at = now or datetime.now(UTC)
        self._session.flush()
        return record

    def remove(self, name: str) -> None:
        """Delete ``name``; :class:`NotFound` if absent. Its certificates stay recorded."""
        self._session.delete(self.get(name))
        self._session.flush()


_VERSION = Prepared(
    select(ProvisionerRecord.id, ProvisionerRecord.updated_at).where(
        ProvisionerRecord.name == bindparam("name")
    ),
    typed=True,
)


def provisioner_version(engine: Engine, name: str) -> tuple[int, datetime] | None:
    """The ``id`` and ``updated_at`` of provisioner ``name`` (None: there is none): what
    :class:`~ostiary.provisioners.ProvisionerCache` compares to know whether what it keeps
    is current. One indexed query on the driver, outside any session: SCEP reads it for
    every PKIOperation. ``engine`` should be a read-only one.
    """
    with engine.connect() as connection:
        rows = _VERSION.execute(connection, {"name": name})
    return (int(rows[0][0]), rows[0][1]) if rows else None
