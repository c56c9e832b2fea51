"""Alembic environment for Ostiary's schema.

At run time :func:`ostiary.store.migrate.migrate` hands in a connection that is already in a
transaction (holding the migration lock); everything then runs in that transaction. From the
command line (developers making a new revision)::

    OSTIARY_DATABASE_URL=sqlite:////tmp/dev.db \\
        alembic -c src/ostiary/store/migrations/alembic.ini revision --autogenerate -m "..."
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from ostiary.store import _locks
from ostiary.store.database import create_engine_for
from ostiary.store.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = os.environ.get("OSTIARY_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set OSTIARY_DATABASE_URL to the database to migrate")
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for(_database_url())
    try:
        with engine.begin() as connection:
            _locks.lock_for_transaction(connection, _locks.MIGRATE)
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
