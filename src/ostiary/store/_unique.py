"""Inserting a row that a unique constraint may refuse, without losing the transaction.

The database, not a prior SELECT, decides uniqueness: that is what holds when several
replicas race. With the ORM the insert runs in a SAVEPOINT so that a refusal rolls back only
the insert and the caller's transaction goes on. (The group-commit write path spends tokens
with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, :func:`ostiary.store.tokens.spend_tokens`,
and lets any other duplicate fail its batch: :mod:`ostiary.store.group_commit`.)
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
