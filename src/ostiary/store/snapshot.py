"""Consistent copies of a live database, taken while the server keeps writing.

A snapshot is always a SQLite file, whatever the database is:

- SQLite: the SQLite online backup API (:meth:`sqlite3.Connection.backup`), which copies
  every page under one read transaction, so the copy is the database at one instant.
- PostgreSQL: every table read in one ``REPEATABLE READ`` read-only transaction (one
  snapshot of the whole database) and written into a new SQLite file at the same schema.

:func:`load_snapshot` does the reverse: it fills an empty database, on either backend, with
the rows of a snapshot. The tables are those of :data:`ostiary.store.models.Base`, walked in
foreign-key order; a table in the source that this version does not know is refused rather
than silently left out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from ostiary.core.errors import BadRequest, Conflict
from ostiary.store.database import create_engine_for, sqlite_url_for
from ostiary.store.migrate import current_revision, head_revision, migrate
from ostiary.store.models import Base

#: Rows copied per INSERT statement.
_BATCH = 1000
#: Alembic's own table: written by :func:`migrate`, never copied.
_ALEMBIC_TABLE = "alembic_version"


def snapshot_database(url: str, destination: Path) -> str | None:
    """Write a consistent copy of the database at ``url`` to the new SQLite file
    ``destination``; return the schema revision of the copy.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database is None or database in ("", ":memory:"):
            raise BadRequest("an in-memory database cannot be backed up")
        if not Path(database).exists():
            raise BadRequest(f"the database {database} does not exist")
        with (
            closing(sqlite3.connect(database, timeout=30)) as source,
            closing(sqlite3.connect(destination)) as target,
        ):
            source.backup(target)
        with _engine(sqlite_url_for(destination)) as copy:
            return current_revision(copy)
    with _engine(url) as engine:
        if current_revision(engine) != head_revision():
            raise Conflict("the database schema is not up to date: run 'ostiary ca migrate'")
        migrate(sqlite_url_for(destination))
        with (
            _engine(sqlite_url_for(destination)) as copy,
            engine.connect().execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            ) as source,
            copy.begin() as target,
        ):
            _copy_rows(source, target)
    return head_revision()


def load_snapshot(snapshot: Path, url: str) -> None:
    """Fill the empty database at ``url`` with the rows of ``snapshot`` (brought to head).

    Refuses a database that already holds tables: a restore never merges.
    """
    with _engine(url) as engine:
        existing = set(inspect(engine).get_table_names())
        if existing:
            shown = make_url(url).render_as_string(hide_password=True)
            raise Conflict(f"the database {shown} is not empty: restore into a new database")
        migrate(sqlite_url_for(snapshot))
        migrate(engine)
        with _engine(sqlite_url_for(snapshot)) as source_engine:
            with source_engine.connect() as source, engine.begin() as target:
                _copy_rows(source, target)
                _continue_sequences(target)


def _copy_rows(source: Connection, target: Connection) -> None:
    """Make ``target``'s tables hold exactly ``source``'s rows; refuse unknown tables."""
    unknown = set(inspect(source).get_table_names()) - set(Base.metadata.tables) - {_ALEMBIC_TABLE}
    if unknown:
        raise Conflict(
            f"the database has tables this version of Ostiary does not know "
            f"({', '.join(sorted(unknown))}): use the version that wrote it"
        )
    # Migrations may seed rows (the audit head); the source's rows replace them.
    for table in reversed(Base.metadata.sorted_tables):
        target.execute(table.delete())
    for table in Base.metadata.sorted_tables:
        result = source.execute(select(table)).mappings()
        while rows := result.fetchmany(_BATCH):
            target.execute(table.insert(), [dict(row) for row in rows])


def _continue_sequences(target: Connection) -> None:
    """On PostgreSQL, move each identity sequence past the copied ids (SQLite needs none)."""
    if target.dialect.name != "postgresql":
        return
    for table in Base.metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        highest = target.scalar(select(func.max(column)))
        if highest is None:
            continue
        target.execute(
            text("SELECT setval(pg_get_serial_sequence(:table, :column), :value)"),
            {"table": table.name, "column": column.name, "value": highest},
        )


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    engine = create_engine_for(url)
    try:
        yield engine
    finally:
        engine.dispose()
