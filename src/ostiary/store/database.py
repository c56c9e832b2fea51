"""Engines and transactions: how Ostiary talks to SQLite or PostgreSQL.

SQLite (the default, one process) is opened in WAL mode with foreign keys on and a busy
timeout, and every write transaction starts with ``BEGIN IMMEDIATE``: the write lock is taken
up front, so two writers queue on the busy timeout instead of both reading, then failing to
upgrade (``SQLITE_BUSY`` without waiting). This is SQLAlchemy's documented pysqlite recipe
(disable the driver's own ``BEGIN``, emit ours from the ``begin`` event). Read-only
transactions use a plain deferred ``BEGIN`` and never block writers in WAL mode.

PostgreSQL (several replicas) is reached through psycopg 3 (``postgresql+psycopg://``).

A :class:`Store` is safe to share between threads: each :meth:`Store.transaction` gets its own
session and connection. A session itself must stay in the thread that opened it.
:meth:`Store.write` is the hot path: Core statements from many threads, committed in groups
(:mod:`ostiary.store.group_commit`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from ostiary.core.errors import BadRequest
from ostiary.store.group_commit import GroupCommit, Unit
from ostiary.store.tokens import TokenUse
from ostiary.store.types import dumps_json

T = TypeVar("T")

#: How long a SQLite writer waits for the write lock before giving up.
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
#: How long a request waits for a pooled PostgreSQL connection before it is refused (503).
POOL_TIMEOUT_SECONDS = 10.0
#: Driver names accepted for PostgreSQL; all are served by psycopg 3.
_POSTGRES_DRIVERS = frozenset({"postgres", "postgresql", "postgresql+psycopg"})
#: Execution option marking a read-only transaction (deferred ``BEGIN`` on SQLite).
_READ_ONLY = "ostiary_read_only"


def sqlite_url_for(path: str | os.PathLike[str]) -> str:
    """Return the SQLAlchemy URL of the SQLite database file at ``path`` (made absolute)."""
    absolute = os.path.abspath(os.fspath(path))
    return URL.create("sqlite+pysqlite", database=absolute).render_as_string(hide_password=False)


def create_engine_for(url: str) -> Engine:
    """Make an engine for ``url``: a SQLite file or PostgreSQL.

    ``sqlite://`` (in memory) is one shared connection: for single-threaded experiments only.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BadRequest(
            "not a database URL (expected sqlite:///path or postgresql://...)"
        ) from None
    if parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        return _create_sqlite_engine(parsed)
    if parsed.drivername in _POSTGRES_DRIVERS:
        return _create_postgres_engine(parsed)
    shown = parsed.render_as_string(hide_password=True)
    raise BadRequest(
        f"unsupported database {shown!r}: use sqlite:///path or postgresql+psycopg://...",
        driver=parsed.drivername,
    )


def _create_postgres_engine(url: URL) -> Engine:
    """Psycopg 3, with bounded waits everywhere (see :mod:`ostiary.store._postgres`)."""
    from ostiary.store import _postgres

    engine = create_engine(
        url.set(drivername="postgresql+psycopg"),
        pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args=_postgres.connect_arguments(),
        json_serializer=dumps_json,
    )
    event.listen(engine, "do_connect", _postgres.connect)
    return engine


def _create_sqlite_engine(url: URL) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    options: dict[str, Any] = {"json_serializer": dumps_json}
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    if in_memory:
        # One shared connection, or every thread would see its own empty database.
        options["poolclass"] = StaticPool
        connect_args["check_same_thread"] = False
    if not in_memory:
        _create_private_file(str(url.database))
    engine = create_engine(url, connect_args=connect_args, **options)

    @event.listens_for(engine, "connect")
    def _configure_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Stop the sqlite3 module from issuing its own BEGIN; _begin() below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
            if not in_memory:
                _use_write_ahead_log(cursor)
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _create_private_file(path: str) -> None:
    """Create a new database file readable by its owner only (0600) before SQLite opens it.

    SQLite creates a missing file with the process's umask (0644, usually), and its -wal and
    -shm files take the database file's mode: so every one of them stays 0600. An existing
    file is left as it is (``ca doctor`` reports a loose mode).
    """
    if path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except (FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError):
        pass  # there already, or its folder is missing or closed (SQLite says so itself)


def _use_write_ahead_log(cursor: sqlite3.Cursor) -> None:
    """Switch the database file to WAL mode (it stays so), waiting out a busy database.

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once
    instead of calling the busy handler when two new connections race to switch; retry.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorname", "") in {"SQLITE_BUSY", "SQLITE_LOCKED"}
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_only_engine(engine: Engine) -> Engine:
    """Return ``engine`` for reading only: on SQLite it does not take the write lock."""
    return engine.execution_options(**{_READ_ONLY: True})


class Store:
    """The database of one Ostiary deployment: an engine and the sessions made from it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._read_engine = read_only_engine(engine)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        self._group_commit = GroupCommit(engine)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(create_engine_for(url))

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def read_engine(self) -> Engine:
        """:attr:`engine` for Core reads outside a session: never takes SQLite's write lock."""
        return self._read_engine

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Session]:
        """Open a session in one transaction: committed if the block succeeds, else rolled back.

        ``read_only=True`` never commits and, on SQLite, does not take the write lock, so a
        long read (a CRL of a million entries) does not hold up issuance.
        """
        if read_only:
            # Closing releases the connection, which the pool rolls back; unlike rollback(),
            # it leaves loaded objects readable.
            with self._read_sessions() as session:
                yield session
            return
        with self._sessions.begin() as session:
            yield session

    @property
    def batch_listeners(self) -> list[Callable[[int], None]]:
        """Called with the size of each committed group-commit batch (``/metrics``)."""
        return self._group_commit.batch_listeners

    def write(self, unit: Unit[T], *, token: TokenUse | None = None) -> T:
        """Run a Core write ``unit`` in a transaction shared with concurrent ones.

        The hot write path (issuance): see :mod:`ostiary.store.group_commit`. ``token`` is
        spent before ``unit`` runs (:attr:`~ostiary.store.group_commit.Batch.token_spent`).
        Returns the unit's result once its transaction has committed.
        """
        return self._group_commit.submit(unit, token=token)

    async def write_async(
        self, unit: Unit[T], *, token: TokenUse | None = None, deadline: float | None = None
    ) -> T:
        """:meth:`write` from a coroutine, without blocking its event loop; ``deadline`` as
        in :meth:`GroupCommit.submit_async <ostiary.store.GroupCommit.submit_async>`.
        """
        return await self._group_commit.submit_async(unit, token=token, deadline=deadline)

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or in tests before dropping a database)."""
        self._engine.dispose()
