"""An audit log that cannot be written: a trigger in the database refusing every new entry.

As a full or broken audit device would, it makes every audit append fail inside the
transaction that would record it, on SQLite and PostgreSQL, whichever process writes (the
trigger lives in the database file or schema, so a ``ca serve`` subprocess meets it too).
Entry paths must then refuse (503 ``audit-unavailable`` with Retry-After, or their protocol's
own temporary failure) and change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import Engine, create_engine, func, select, text

from ostiary.store import AuditEntry

#: The database's words: they go to the server's log only, never to a client.
REFUSE = "audit device unavailable"
AUDIT_UNAVAILABLE = "urn:ostiary:error:audit-unavailable"


@contextmanager
def audit_refused(engine: Engine | str, *, event: str | None = None) -> Iterator[None]:
    """Refuse every insert into ``audit_entries`` (only entries of ``event``, if given) until
    the block ends (``engine`` or a URL)."""
    if isinstance(engine, str):
        owned = create_engine(engine)
        try:
            with audit_refused(owned, event=event):
                yield
        finally:
            owned.dispose()
        return
    assert event is None or event.replace(".", "").replace("_", "").isalnum()
    when = "" if event is None else f"WHEN NEW.event = '{event}' "
    pg_when = "" if event is None else f"WHEN (NEW.event = '{event}') "
    if engine.dialect.name == "sqlite":
        create = (
            f"CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries {when}"
            f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
        )
        drop = "DROP TRIGGER refuse_audit"
    else:
        create = (
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$BEGIN RAISE EXCEPTION '{REFUSE}'; END$$; "
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
            f"FOR EACH ROW {pg_when}"
            "EXECUTE FUNCTION refuse_audit()"
        )
        drop = "DROP TRIGGER refuse_audit ON audit_entries; DROP FUNCTION refuse_audit()"
    with engine.begin() as connection:
        connection.execute(text(create))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text(drop))


def audit_entries(engine: Engine | str) -> int:
    """How many audit entries the database holds."""
    owned = create_engine(engine) if isinstance(engine, str) else None
    try:
        with (owned or engine).connect() as connection:  # type: ignore[union-attr]
            return int(connection.scalar(select(func.count()).select_from(AuditEntry)) or 0)
    finally:
        if owned is not None:
            owned.dispose()


def assert_audit_unavailable(answer: httpx.Response) -> None:
    """The refusal: 503, our problem type, Retry-After, nothing of the database's message."""
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == AUDIT_UNAVAILABLE
    assert int(answer.headers["Retry-After"]) >= 1
    assert REFUSE not in answer.text


__all__ = [
    "AUDIT_UNAVAILABLE",
    "REFUSE",
    "assert_audit_unavailable",
    "audit_entries",
    "audit_refused",
]
