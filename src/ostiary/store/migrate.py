"""Bringing the database schema up to date, safely at every start of every replica.

:func:`migrate` runs Alembic in one transaction that first takes a lock: a PostgreSQL
advisory lock, or SQLite's write lock (``BEGIN IMMEDIATE``). A second replica starting at the
same time waits, then finds the schema at head and does nothing. No ``alembic.ini`` is needed:
the configuration is built here and points at the ``migrations`` folder of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine

from ostiary.core.errors import Conflict
from ostiary.store import _locks
from ostiary.store.database import create_engine_for, read_only_engine

MIGRATIONS_DIRECTORY = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """Build the Alembic configuration of our migrations, using ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY))
    config.attributes["connection"] = connection
    return config


def migrate(target: str | Engine) -> None:
    """Upgrade the database at ``target`` (a URL or an engine) to the newest schema."""
    engine = create_engine_for(target) if isinstance(target, str) else target
    try:
        with engine.begin() as connection:
            _locks.lock_for_transaction(connection, _locks.MIGRATE)
            current = MigrationContext.configure(connection).get_current_revision()
            _refuse_unknown(_scripts(), current)
            command.upgrade(alembic_config(connection), "head")
    finally:
        if isinstance(target, str):
            engine.dispose()


@dataclass(frozen=True)
class Revision:
    """One migration: its revision id and the first line of its docstring."""

    revision: str
    message: str


def pending_revisions(engine: Engine) -> list[Revision]:
    """The migrations :func:`migrate` would apply to the database of ``engine``, oldest first."""
    scripts = _scripts()
    current = current_revision(engine)
    _refuse_unknown(scripts, current)
    pending = scripts.iterate_revisions("head", current or "base")
    return [Revision(s.revision, (s.doc or "").strip()) for s in reversed(list(pending))]


def all_revisions() -> list[Revision]:
    """Every migration this version knows, oldest first."""
    return [
        Revision(s.revision, (s.doc or "").strip())
        for s in reversed(list(_scripts().walk_revisions()))
    ]


def head_revision() -> str | None:
    """Return the newest revision this version of Ostiary knows."""
    return _scripts().get_current_head()


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _refuse_unknown(scripts: ScriptDirectory, current: str | None) -> None:
    """A database written by a newer Ostiary: refused in one line, never touched."""
    if current is None:
        return
    try:
        scripts.get_revision(current)
    except (CommandError, ResolutionError):
        raise Conflict(
            f"the database schema is at revision {current!r}, which this version of Ostiary "
            f"does not know (its newest is {scripts.get_current_head()!r}): run the newer "
            "version that wrote it"
        ) from None


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at; None if it was never migrated."""
    with read_only_engine(engine).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
