"""Engines, transactions and the column types every table relies on."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from ostiary.core.errors import BadRequest
from ostiary.store import ProvisionerRecord, ProvisionerRepository, Store, create_engine_for
from ostiary.store.database import sqlite_url_for


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    engine = create_engine_for(sqlite_url_for(tmp_path / "ca.db"))
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


def test_sqlite_url_for_keeps_odd_characters_in_the_path(tmp_path):
    path = tmp_path / "a?b#c d.db"
    engine = create_engine_for(sqlite_url_for(path))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    finally:
        engine.dispose()
    assert path.exists()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://root@localhost/ca", id="fail/mysql"),
        pytest.param("postgresql+psycopg2://u:hunter2@h/ca", id="fail/psycopg2"),
        pytest.param("not a url", id="fail/garbage"),
    ],
)
def test_unsupported_database_urls_are_refused_without_showing_the_password(url):
    with pytest.raises(BadRequest) as caught:
        create_engine_for(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://u@db.example/ca", id="ok/postgresql"),
        pytest.param("postgres://u@db.example/ca", id="ok/postgres-alias"),
        pytest.param("postgresql+psycopg://u@db.example/ca", id="ok/psycopg"),
    ],
)
def test_postgresql_urls_are_served_by_psycopg(url):
    engine = create_engine_for(url)  # no connection is made yet
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    engine.dispose()


def test_transaction_commits_on_success_and_rolls_back_on_error(store, now):
    with store.transaction() as session:
        ProvisionerRepository(session).add("kept", type="token", config={}, now=now)

    def add_then_fail() -> None:
        with store.transaction() as session:
            ProvisionerRepository(session).add("dropped", type="token", config={}, now=now)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        add_then_fail()
    with store.transaction(read_only=True) as session:
        names = session.scalars(select(ProvisionerRecord.name)).all()
    assert names == ["kept"]


def test_read_only_transaction_never_commits(store, now):
    with store.transaction(read_only=True) as session:
        ProvisionerRepository(session).add("ghost", type="token", config={}, now=now)
    with store.transaction(read_only=True) as session:
        assert ProvisionerRepository(session).list() == []


def test_concurrent_read_then_write_transactions_do_not_fail_on_sqlite(tmp_path):
    """Deferred transactions that read, then write, fail with SQLITE_BUSY under contention;
    BEGIN IMMEDIATE makes them queue instead."""
    url = sqlite_url_for(tmp_path / "ca.db")
    stores = [Store.from_url(url), Store.from_url(url)]
    with stores[0].transaction() as session:
        session.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
    errors: list[BaseException] = []

    def work(store: Store) -> None:
        try:
            for _ in range(50):
                with store.transaction() as session:
                    n = session.execute(text("SELECT n FROM counter")).scalar_one()
                    session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with stores[0].transaction(read_only=True) as session:
        total = session.execute(text("SELECT n FROM counter")).scalar_one()
    for store in stores:
        store.dispose()
    assert errors == []
    assert total == 8 * 50


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), id="ok/utc"),
        pytest.param(
            datetime(2025, 3, 1, 13, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))),
            id="ok/offset",
        ),
    ],
)
def test_datetimes_come_back_aware_utc_and_equal(store, at):
    with store.transaction() as session:
        ProvisionerRepository(session).add("p", type="token", config={}, now=at)
    with store.transaction(read_only=True) as session:
        record = ProvisionerRepository(session).get("p")
    assert record.created_at == at
    assert record.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(store):
    with pytest.raises(StatementError, match="naive datetime"), store.transaction() as session:
        ProvisionerRepository(session).add(
            "p", type="token", config={}, now=datetime(2025, 3, 1, 12, 0)
        )
