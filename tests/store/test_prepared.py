"""Prepared statements: on SQLite the driver runs SQLAlchemy's SQL with SQLAlchemy's values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, delete, event, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ostiary.store import (
    AuditEntry,
    CertificateRecord,
    Store,
    UsedToken,
    certificate_values,
)
from ostiary.store._prepared import Prepared
from ostiary.store._unique import is_unique_violation
from tests.store.conftest import MiniCA

INSERT_CERTIFICATE = Prepared(insert(CertificateRecord))
INSERT_ENTRY = Prepared(insert(AuditEntry))


def entry(number: int, now: datetime) -> dict[str, Any]:
    return {
        "at": now,
        "event": "test.prepared",
        "actor": None,
        "target": f"t{number}",
        "details": {"n": number, "nested": {"list": [1, "two"]}},
        "prev_hash": f"{number:064x}",
        "hash": f"{number + 1:064x}",
    }


def stored(store: Store, model: type[Any]) -> list[dict[str, Any]]:
    """Every row of ``model``'s table as SQLAlchemy reads it, without the ids."""
    with store.transaction(read_only=True) as session:
        rows = session.execute(select(model.__table__)).mappings().all()
    return sorted(({k: v for k, v in r.items() if k != "id"} for r in rows), key=repr)


def test_rows_written_by_the_driver_read_back_as_sqlalchemys_own(
    store: Store, ca: MiniCA, now: datetime
) -> None:
    """The same rows through Prepared, then through Connection.execute: the same values back
    (datetimes, JSON, bytes), on both backends."""
    certificates = [
        certificate_values(
            ca.issue(common_name=f"p{n}"), profile="client", provisioner="p", now=now
        )
        for n in range(2)
    ]
    entries = [entry(1, now), entry(2, now)]
    with store.engine.begin() as connection:
        INSERT_CERTIFICATE.execute(connection, certificates)
        INSERT_ENTRY.execute(connection, entries)
    prepared = (stored(store, CertificateRecord), stored(store, AuditEntry))
    with store.engine.begin() as connection:
        connection.execute(delete(CertificateRecord))
        connection.execute(delete(AuditEntry))
        connection.execute(insert(CertificateRecord), certificates)
        connection.execute(insert(AuditEntry), entries)
    assert prepared == (stored(store, CertificateRecord), stored(store, AuditEntry))
    assert [e["details"] for e in prepared[1]] == [e["details"] for e in entries]
    assert {c["not_after"] for c in prepared[0]} == {c["not_after"] for c in certificates}


def test_on_sqlite_the_driver_runs_it_not_sqlalchemys_execute(
    sqlite_store: Store, now: datetime
) -> None:
    store = sqlite_store
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def count(_conn: Connection, _cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    with store.engine.begin() as connection:
        seen.clear()  # BEGIN IMMEDIATE
        INSERT_ENTRY.execute(connection, [entry(1, now)])
    assert seen == []
    assert len(stored(store, AuditEntry)) == 1


def test_a_duplicate_is_sqlalchemys_integrity_error(
    store: Store, ca: MiniCA, now: datetime
) -> None:
    row = certificate_values(ca.issue(), profile="client", provisioner=None, now=now)
    with store.engine.begin() as connection:
        INSERT_CERTIFICATE.execute(connection, row)
    with pytest.raises(IntegrityError) as refused, store.engine.begin() as connection:
        INSERT_CERTIFICATE.execute(connection, row)
    assert is_unique_violation(refused.value)
    assert len(stored(store, CertificateRecord)) == 1  # the failed transaction left nothing


def test_returning_gives_the_rows_each_parameter_set_inserted(store: Store, now: datetime) -> None:
    dialect = sqlite if store.engine.dialect.name == "sqlite" else postgresql
    spend = Prepared(
        dialect.insert(UsedToken).on_conflict_do_nothing().returning(UsedToken.token_id)
    )

    def use(token_id: str) -> dict[str, Any]:
        return {"provisioner": "p", "token_id": token_id, "used_at": now, "expires_at": now}

    with store.engine.begin() as connection:
        assert spend.execute(connection, [use("a" * 22), use("b" * 22)]) == [
            ("a" * 22,),
            ("b" * 22,),
        ]
        assert spend.execute(connection, [use("b" * 22), use("c" * 22)]) == [("c" * 22,)]


def test_what_it_cannot_run_as_sqlalchemy_would_is_refused(sqlite_store: Store) -> None:
    with sqlite_store.engine.begin() as connection:
        with pytest.raises(ValueError, match="no parameter sets"):
            INSERT_ENTRY.execute(connection, [])
        # CertificateRecord.status has a default computed in Python: give every column.
        with pytest.raises(ValueError, match="every column"):
            INSERT_CERTIFICATE.execute(connection, {"serial": "01", "issuer_key_id": "aa"})


def test_a_typed_select_reads_rows_as_a_result_would(store: Store, now: datetime) -> None:
    """Datetimes and JSON come back converted, as SQLAlchemy's own result gives them."""
    columns = (AuditEntry.at, AuditEntry.details, AuditEntry.target, AuditEntry.actor)
    read = Prepared(select(*columns).where(AuditEntry.target == bindparam("t")), typed=True)
    with store.engine.begin() as connection:
        INSERT_ENTRY.execute(connection, entry(7, now))
    with store.read_engine.connect() as connection:
        rows = read.execute(connection, {"t": "t7"})
        expected = connection.execute(select(*columns).where(AuditEntry.target == "t7")).one()
    assert rows == [tuple(expected)] == [(now, entry(7, now)["details"], "t7", None)]
    with pytest.raises(ValueError, match="for a SELECT"):
        Prepared(insert(AuditEntry), typed=True)
