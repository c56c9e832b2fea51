"""Migrations: idempotent, safe to run from two replicas at once, and equal to the models."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from ostiary.store import Base, Store, current_revision, head_revision, migrate
from ostiary.store.migrate import MIGRATIONS_DIRECTORY


def test_migrate_is_idempotent(database_url):
    migrate(database_url)
    migrate(database_url)
    store = Store.from_url(database_url)
    try:
        assert current_revision(store.engine) == head_revision() is not None
        assert set(inspect(store.engine).get_table_names()) >= set(Base.metadata.tables)
    finally:
        store.dispose()


def test_migrations_match_the_models(store):
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_two_replicas_migrating_at_once_both_succeed(database_url):
    stores = [Store.from_url(database_url), Store.from_url(database_url)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def start(store: Store) -> None:
        barrier.wait()
        try:
            migrate(store.engine)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert current_revision(stores[0].engine) == head_revision()
    finally:
        for store in stores:
            store.dispose()


def test_migration_scripts_live_inside_the_package():
    # The pyproject's package data lists store/migrations/*.mako and *.ini; revisions are
    # Python modules in a package, so a wheel carries them too.
    assert (MIGRATIONS_DIRECTORY / "env.py").is_file()
    assert (MIGRATIONS_DIRECTORY / "script.py.mako").is_file()
    assert (MIGRATIONS_DIRECTORY / "versions" / "__init__.py").is_file()
