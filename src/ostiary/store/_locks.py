"""Locks that serialize work across processes sharing one database.

PostgreSQL: advisory locks. Each lock key is derived from a name (first 8 bytes of its
SHA-256, as a signed 64-bit integer), so keys are stable, readable in code and unlikely to
collide with another application's.

SQLite: write transactions start with ``BEGIN IMMEDIATE`` and so already run one at a time,
but a writer that finds the database locked *sleeps* in SQLite's busy handler (1, 2, 5, 10,
... ms) and looks again, however soon the lock is released. Between processes that write
all the time (``ca serve --workers``) most of the time went to those sleeps: two workers
issued no more than one. :class:`WriterLock` is taken before ``BEGIN IMMEDIATE`` on the
hot write path (:mod:`ostiary.store.group_commit`): an ``flock`` on a file beside the
database, whose waiter the kernel wakes the moment it is released.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


AUDIT_APPEND = lock_key("ostiary.store.audit.append")
MIGRATE = lock_key("ostiary.store.migrate")


def lock_for_transaction(bind: Session | Connection, key: int) -> None:
    """Hold advisory lock ``key`` until the current transaction ends (PostgreSQL only)."""
    if _dialect_name(bind) == "postgresql":
        bind.execute(select(func.pg_advisory_xact_lock(key)))


def _dialect_name(bind: Session | Connection) -> str:
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


class WriterLock:
    """An exclusive ``flock`` on ``<database>-writer``, held around a SQLite write transaction.

    Each process opens the file itself (a descriptor inherited over ``fork`` shares its lock
    with the parent's, which would exclude nothing). A process that dies releases it. If the
    file cannot be opened, writes go on without it, on SQLite's busy handler alone.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._descriptor: int | None = None
        self._owner = 0

    @classmethod
    def for_engine(cls, engine: Engine) -> WriterLock | None:
        """The lock of ``engine``'s database file; None for PostgreSQL or SQLite in memory."""
        database = engine.url.database
        if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
            return None
        return cls(f"{database}-writer")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        descriptor = self._open()
        if descriptor is None:
            yield
            return
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # the GIL is released while it waits
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _open(self) -> int | None:
        if self._owner != os.getpid():
            self._owner = os.getpid()
            try:
                self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as error:
                self._descriptor = None
                logger.warning(
                    "cannot open the writer lock %s (%s): concurrent writers will poll",
                    self.path,
                    error.strerror or error,
                )
        return self._descriptor
