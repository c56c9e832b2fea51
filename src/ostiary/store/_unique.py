"""Inserting a row that a unique constraint may refuse, without losing the transaction.

The database, not a prior SELECT, decides uniqueness: that is what holds when several
replicas race. With the ORM the insert runs in a SAVEPOINT so that a refusal rolls back only
the insert and the caller's transaction goes on; on the Core write path
(:func:`insert_ignoring_duplicate`) ``INSERT ... ON CONFLICT DO NOTHING`` does the same
without a savepoint, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, Integer, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from ostiary.store.models import Base

_PG_UNIQUE_VIOLATION = "23505"
_SQLITE_UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


def is_unique_violation(error: IntegrityError) -> bool:
    """Tell whether ``error`` is a unique (or primary key) constraint refusing a duplicate."""
    original = error.orig
    if getattr(original, "sqlstate", None) == _PG_UNIQUE_VIOLATION:
        return True
    return getattr(original, "sqlite_errorname", None) in _SQLITE_UNIQUE_ERRORS


def insert_unless_duplicate(session: Session, row: Base) -> bool:
    """Insert ``row`` now; False (and nothing inserted) if a unique constraint refuses it.

    Any other integrity error (a NOT NULL or CHECK constraint) is a bug and propagates.
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as error:
        if is_unique_violation(error):
            return False
        raise
    return True


def insert_ignoring_duplicate(
    connection: Connection, model: type[Base], values: dict[str, Any]
) -> bool:
    """Insert one row with Core; False (nothing inserted) if a unique key already has it.

    On PostgreSQL a concurrent, uncommitted insert of the same key makes this wait for that
    transaction, then report the duplicate if it committed.
    """
    postgres = connection.dialect.name == "postgresql"
    return connection.execute(_insert_or_nothing(model, postgres), values).first() is not None


@functools.cache
def _insert_or_nothing(model: type[Base], postgres: bool) -> ReturningInsert[tuple[int]]:
    """Built once per table: building a statement per row costs more than running it."""
    statement = (
        postgresql.insert(model).on_conflict_do_nothing()
        if postgres
        else sqlite.insert(model).on_conflict_do_nothing()
    )
    # RETURNING, not rowcount: psycopg reports no row count for this statement.
    return statement.returning(literal_column("1", Integer))
